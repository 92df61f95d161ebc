"""Text tables and the stacked-bar plot of a profile."""

from __future__ import annotations

from pathlib import Path

from qnnlab.analysis.profile import Profile
from qnnlab.analysis.rules import FWD, PHASES


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def layer_table(prof: Profile) -> str:
    """Per layer: type, operand kinds (input x weight), forward MACs by kind, deployed weight bits."""
    rows = [("layer", "type", "input x weight", "forward MACs", "accumulator", "weights (deployed)", "energy")]
    for lc in prof.layers:
        if not lc.counted:
            rows.append((lc.name, lc.type, "-", "NOT COUNTED", "-", "-", "-"))
            continue
        macs = {k: n for (p, o, k), n in lc.counts.items() if p == FWD and o == "mac"}
        if not macs and not lc.memory and not lc.counts:
            continue
        operands = f"{lc.info['input']} x {lc.info['weight']}" if "weight" in lc.info else ""
        acc = f"{lc.info['accumulator_bits']} bits" if "accumulator_bits" in lc.info else ""
        rows.append(
            (
                lc.name,
                lc.type,
                operands,
                ", ".join(f"{_si(n)} {k}" for k, n in macs.items()),
                acc,
                f"{_si(lc.memory['weights_deployed'])}b" if lc.memory["weights_deployed"] else "",
                f"{_si(prof.compute_energy_pj(layer=lc))}pJ",
            )
        )
    return _format(rows)


def phase_table(prof: Profile) -> str:
    phases = PHASES if prof.train else (FWD,)
    rows = [("phase", "MACs by kind", "other operations", "compute energy", "memory energy")]
    for phase in phases:
        macs = ", ".join(f"{_si(prof.macs(phase, k))} {k}" for k in prof.mac_kinds() if prof.macs(phase, k))
        other = ", ".join(
            f"{_si(n)} {o}/{k}" for (o, k), n in sorted(prof._ops_by(phase).items(), key=lambda kv: -kv[1])[:6]
        )
        rows.append(
            (
                phase,
                macs or "-",
                other or "-",
                f"{_si(prof.compute_energy_pj(phase))}pJ",
                f"{_si(prof.memory_energy_pj(phase))}pJ",
            )
        )
    rows.append(
        (
            "total",
            f"{_si(prof.macs())}",
            f"{_si(prof.ops())}",
            f"{_si(prof.compute_energy_pj())}pJ",
            f"{_si(prof.memory_energy_pj())}pJ",
        )
    )
    return _format(rows)


def hidden_table(prof: Profile) -> str:
    rows = [("hidden cost", "share", "detail", "removed by")]
    rows += [(h["cost"], f"{100 * h['share']:.1f}%", h["detail"], h["removed_by"]) for h in prof.hidden_costs()]
    return _format(rows)


def full_report(prof: Profile) -> str:
    parts = [
        layer_table(prof),
        "",
        phase_table(prof),
        "",
        "memory (bits): " + ", ".join(f"{k} {_si(v)}" for k, v in prof.memory_bits().items()),
        "",
        hidden_table(prof),
    ]
    if prof.xnor_speedups():
        parts += ["", "XNOR-Net speed-up model (binary convolutions, 64-bit words):"]
        parts += [
            f"  {r['layer']}: c={r['channels']}, N_W={r['kernel_area']}: model {r['theoretical_speedup']:.1f}x"
            + (
                f", measured {r['measured_speedup']:.1f}x (packed kernel vs float conv2d, this machine)"
                if r["measured_speedup"] is not None
                else ""
            )
            for r in prof.xnor_speedups()
        ]
    if prof.kernel_repetition():
        parts += ["", "binary kernel repetition (distinct 2-D filters per input channel):"]
        parts += [
            f"  {r['layer']}: {r['distinct_filters']}/{r['filters']} distinct "
            f"({r['distinct_up_to_sign']} up to sign), saves {100 * r['saved_fraction']:.1f}% of MACs"
            for r in prof.kernel_repetition()
        ]
    if prof.not_counted:
        parts += ["", "NOT COUNTED (no cost rule): " + ", ".join(prof.not_counted)]
    parts += ["", f"energy: {prof.energy.source}; memory traffic priced as {prof.memory_level}"]
    return "\n".join(parts)


def _format(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(prof: Profile, path: str | Path) -> None:
    """Stacked bars: energy per phase split by operation kind (and memory traffic)."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'qnnlab[plot]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = PHASES if prof.train else (FWD,)
    parts: dict[str, list[float]] = {}
    for i, phase in enumerate(phases):
        for lc in prof.layers:
            for (p, o, k), n in lc.counts.items():
                if p == phase:
                    label = f"MAC {k}" if o == "mac" else f"{o} {k}"
                    parts.setdefault(label, [0.0] * len(phases))[i] += n * prof._op_energy(o, k, lc) / 1e6
        parts.setdefault("memory traffic", [0.0] * len(phases))[i] += prof.memory_energy_pj(phase) / 1e6
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottom = [0.0] * len(phases)
    for label, values in sorted(parts.items(), key=lambda kv: -sum(kv[1])):
        if sum(values) <= 0:
            continue
        ax.bar(phases, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("energy per step (uJ)")
    ax.set_title("energy by phase and operation kind")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
