"""Reproduce Table 1 of the ZeRO paper (Rajbhandari et al. 2020): model-state memory
per device in GB for Ψ = 7.5B, 128B, 1T parameters, K = 12, at N_d = 1 ... 1024."""

from __future__ import annotations

import pytest

from planner.memory.model_states import model_states
from planner.setups import Setup
from tests.support.specs import cluster_of, synthetic_spec

# (Ψ, N_d) -> (P_os, P_os+g, P_os+g+p) in GB, as printed in Table 1.
TABLE_1: dict[tuple[float, int], tuple[float, float, float]] = {
    (7.5e9, 1): (120, 120, 120),
    (7.5e9, 4): (52.5, 41.3, 30),
    (7.5e9, 16): (35.6, 21.6, 7.5),
    (7.5e9, 64): (31.4, 16.6, 1.88),
    (7.5e9, 256): (30.4, 15.4, 0.47),
    (7.5e9, 1024): (30.1, 15.1, 0.12),
    (128e9, 1): (2048, 2048, 2048),
    (128e9, 4): (896, 704, 512),
    (128e9, 16): (608, 368, 128),
    (128e9, 64): (536, 284, 32),
    (128e9, 256): (518, 263, 8),
    (128e9, 1024): (513, 257, 2),
    (1e12, 1): (16000, 16000, 16000),
    (1e12, 4): (7000, 5500, 4000),
    (1e12, 16): (4750, 2875, 1000),
    (1e12, 64): (4187, 2218, 250),
    (1e12, 256): (4046, 2054, 62.5),
    (1e12, 1024): (4011, 2013, 15.6),
}


def _setup(stage: int) -> Setup:
    return Setup(
        method="full",
        precision="fp16-mixed",
        optimizer="adamw",
        zero_stage=stage,
        fsdp=None,
        offload_optimizer="none",
        offload_params="none",
        gradient_checkpointing=False,
        micro_batch_size=1,
        seq_len=1024,
    )


@pytest.mark.parametrize(("psi", "n_d"), sorted(TABLE_1))
def test_zero_table_1(psi: float, n_d: int) -> None:
    spec = synthetic_spec(int(psi))
    cluster = cluster_of(n_d)
    for stage, expected_gb in zip((1, 2, 3), TABLE_1[(psi, n_d)], strict=True):
        st = model_states(spec, cluster, _setup(stage))
        got_gb = (st.weights_bytes + st.gradients_bytes + st.optimizer_bytes) / 1e9
        # within 1%, or within the rounding of the printed value (0.12 for 0.1172)
        printed = 0.005 if expected_gb < 1 else 0.0
        assert got_gb == pytest.approx(expected_gb, rel=0.01, abs=printed), (stage, psi, n_d)


def test_baseline_is_16_bytes_per_parameter() -> None:
    spec = synthetic_spec(7_500_000_000)
    st = model_states(spec, cluster_of(8), _setup(0))
    assert st.weights_bytes + st.gradients_bytes + st.optimizer_bytes == 16 * 7_500_000_000
