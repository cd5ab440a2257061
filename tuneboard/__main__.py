from tuneboard.cli import main

main()
