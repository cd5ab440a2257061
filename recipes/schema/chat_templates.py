"""Chat templates: the recipe's `data.chat_template` resolved to a Jinja string.

`model` (or unset) keeps the tokenizer's own template; `chatml` is the template below, with
`{% generation %}` markers so that TRL can compute an assistant-only loss; a path ending in
.jinja/.j2 is read; anything else containing `{%` or `{{` is used as the template itself.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


def check_chat_template_value(value: str | None) -> None:
    """The shape check the schema does (files are read at run time)."""
    if value is None or value in ("model", "chatml") or value.endswith((".jinja", ".j2")):
        return
    if "{%" in value or "{{" in value:
        return
    raise ValueError(f"{value!r}: use 'model', 'chatml', a .jinja file or a Jinja string")


def resolve_chat_template(value: str | None) -> str | None:
    """None: keep the tokenizer's; otherwise the Jinja text to install."""
    if value is None or value == "model":
        return None
    if value == "chatml":
        return CHATML
    if value.endswith((".jinja", ".j2")):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"data.chat_template: {value!r}: no such file")
        return path.read_text(encoding="utf-8")
    if "{%" in value or "{{" in value:
        return value
    raise ValueError(
        f"data.chat_template {value!r}: use 'model', 'chatml', a .jinja file or a Jinja string"
    )
