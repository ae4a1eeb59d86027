"""The human-readable table of ``megameta plan`` (``--json`` prints the dict instead)."""

from __future__ import annotations

from megameta.plan.memory import GIB


def _count(n: float) -> str:
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _gib(n: float | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f} GiB"


def _size(n: float) -> str:
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def _hours(h: float) -> str:
    if h >= 48:
        return f"{h / 24:.1f} days"
    if h >= 1:
        return f"{h:.1f} h"
    return f"{h * 60:.1f} min" if h * 60 >= 1 else f"{h * 3600:.1f} s"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def render(plan: dict) -> str:
    """The plan as sections of aligned text."""
    c, m, b, mem = plan["cluster"], plan["model"], plan["batch"], plan["memory"]
    states = mem["model_states"]
    offload = [k for k in ("optimizer", "param") if b[f"offload_{k}"]]
    out = [
        f"plan for {plan['run_dir']}",
        f"cluster   {c['nodes']} node(s) x {c['gpus_per_node']} {c['gpu']} = {c['world']} GPUs, "
        f"{c['gpu_memory_gib']:g} GiB each, peak {c['peak_tflops']:g} TFLOP/s ({b['precision']}), "
        f"MFU {c['mfu']:.0%}",
        f"model     {m['layers']} layers, hidden {m['hidden']}, FFN {m['ffn']}, {m['heads']} heads, "
        f"vocab {m['vocab']:,}: {m['params']:,} parameters; "
        f"{m['flops_per_token'] / 1e9:.2f} GFLOP/token (masked-only head)",
        f"batch     {b['micro_batch']} micro x {b['grad_accum']} accum x {c['world']} GPUs = "
        f"{b['global_batch']:,} sequences x {b['seq_len']} = {b['tokens_per_step']:,} tokens/step "
        f"(~{b['step_seconds']:.3g} s at the MFU); "
        f"ZeRO-{b['zero_stage']}{' offload ' + '+'.join(offload) if offload else ''}, "
        f"activation checkpointing {'on' if b['activation_checkpointing'] else 'off'}",
        "",
        "memory per GPU",
    ]
    ds = mem["deepspeed_estimate"]
    rows = [
        ("parameters", _gib(states["params"])),
        ("gradients", _gib(states["grads"])),
        ("optimizer states", _gib(states["optimizer"])),
        ("model states", _gib(states["total"]) + (f"   (DeepSpeed's estimator: {_gib(ds)})" if ds else "")),
        ("communication buckets", _gib(mem["buffers"])),
        (f"activations, micro-batch {b['micro_batch']}", _gib(mem["activations"]["total"])),
        ("  without / with checkpointing", f"{_gib(mem['activations_without_checkpointing'])} / "
         f"{_gib(mem['activations_with_checkpointing'])}"),
        ("total", f"{_gib(mem['total'])} of {_gib(mem['usable'])} usable"),
        ("largest micro-batch that fits", f"{mem['max_micro_batch']} (without / with checkpointing: "
         f"{mem['max_micro_batch_without_checkpointing']} / {mem['max_micro_batch_with_checkpointing']})"),
    ]  # fmt: skip
    if states["host"]:
        rows.append(("host memory per node (offload)", _gib(states["host"] * c["gpus_per_node"])))
    out += _table(rows)
    ck = plan["checkpoint"]
    out += ["", f"phases (checkpoint: {_size(ck['total'])} = weights {_size(ck['weights'])} + "
            f"optimizer {_size(ck['optimizer'])})"]  # fmt: skip
    rows = [("phase", "langs", "steps", "tokens", "wall time", "kept ckpts", "disk")]
    for p in plan["phases"]:
        langs = ",".join(p["langs"]) if len(p["langs"]) <= 4 else f"{len(p['langs'])} languages"
        rows.append(
            (
                p["name"] + (" [control]" if p["baseline"] else ""),
                langs,
                f"{p['steps']:,}",
                _count(p["tokens"]),
                _hours(p["hours"]),
                f"{p['checkpoints_kept']} (peak {p['checkpoints_peak']})",
                _size(p["disk_bytes"]),
            )
        )
    t = plan["totals"]
    rows.append(
        ("total", "", f"{t['steps']:,}", _count(t["tokens"]), _hours(t["hours"]), "", _size(t["disk_bytes"]))
    )
    out += _table(rows)
    out += ["", "data"] + _data_rows(plan["data"])
    return "\n".join(out)


def _data_rows(data: list[dict]) -> list[str]:
    counts = {s: sum(1 for d in data if d["status"] == s) for s in ("shards", "raw", "hf", "missing")}
    lines = ["  " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    rows = [("lang", "status", "available", "needed", "epochs")]
    for d in data:
        have = (
            f"{_count(d['tokens'])} tokens"
            if d["tokens"] is not None
            else (_size(d["bytes"]) if d["bytes"] else "-")
        )
        need = _count(d["tokens_needed"]) if "tokens_needed" in d else "-"
        epochs = f"{d['epochs']:.2f}" if "epochs" in d else "-"
        rows.append((d["lang"], d["status"], have, need, epochs))
    lines += _table(rows)
    missing = [f"  missing {d['lang']}: {', '.join(d['missing'])}" for d in data if d["missing"]]
    shown = missing[:10]
    if len(missing) > 10:
        shown.append(f"  ... and {len(missing) - 10} more languages with missing files (--json lists all)")
    return lines + shown
