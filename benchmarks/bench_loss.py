"""Time and peak memory of the alignment losses, forward + backward: naive M-TSA vs `tsa_loss`, and the baselines
`trd_loss`, `repa_loss` and `crepa_loss` (D = 1, tau = 1).

Each (configuration, method) runs in a fresh subprocess so that its peak memory is its own: on CPU the growth of
the peak resident set size over the inputs' (`ru_maxrss`), on CUDA `torch.cuda.max_memory_allocated` over the
inputs'. The relation losses cost 8 M N C FLOPs a sample (M queries, N keys: the two relation products and the
two gradient products); their rate is set against the machine's fp32 matmul rate, measured in the same process
between the timed calls on one product of the same size, `(M, C) @ (C, N)`. Results go to
`benchmarks/results/loss_<device>.json` and a Markdown table beside it, with the load average of the machine.

    python benchmarks/bench_loss.py                 # CPU
    python benchmarks/bench_loss.py --device cuda   # a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


RESULTS = Path(__file__).parent / "results"

CONFIGS = {
    # The paper's teacher grid (VideoMAEv2 ViT-B on 48 frames at 160x240), batch 4, 20 % queries.
    "paper": {"batch": 4, "grid": (24, 10, 15), "channels": 768, "ratio": 0.2, "repeats": 5},
    # An image teacher (DINOv2 ViT-B/14, frame by frame on the same 48 frames at 154x238), batch 4, 20 % queries.
    "image": {"batch": 4, "grid": (48, 11, 17), "channels": 768, "ratio": 0.2, "repeats": 5},
    # Half of that: 16 320 tokens.
    "16k": {"batch": 1, "grid": (24, 20, 34), "channels": 768, "ratio": 0.2, "repeats": 1},
    # A teacher at full 480x720 resolution: 32 400 tokens.
    "high-res": {"batch": 1, "grid": (24, 30, 45), "channels": 768, "ratio": 0.2, "repeats": 1},
}
METHODS = ("naive", "tsa", "trd", "repa", "crepa")


def naive_mtsa(student, teacher, query_mask, tau=0.1):
    """Eq. 8-9, 13 as one would first write them: the (|M| x N) relations of a sample in one go, autograd."""
    batch, frames, height, width, channels = student.shape
    losses = []
    for b in range(batch):
        e_s = F.normalize(student[b].reshape(-1, channels).float(), dim=-1)
        e_t = F.normalize(teacher[b].reshape(-1, channels).float(), dim=-1)
        queries = query_mask[b].reshape(-1)
        r_s = (e_s[queries] @ e_s.T).view(-1, frames, height * width)
        r_t = (e_t[queries] @ e_t.T).view(-1, frames, height * width)
        log_p, log_q = (r_t / tau).log_softmax(-1), (r_s / tau).log_softmax(-1)
        losses.append((log_p.exp() * (log_p - log_q)).sum(-1).mean())
    return torch.stack(losses).mean()


def make_inputs(config, device):
    from diffusers_tsa import motion_saliency_mask

    g = torch.Generator().manual_seed(0)
    frames, height, width = config["grid"]
    shape = (config["batch"], frames, height, width, config["channels"])
    student = torch.randn(shape, generator=g).to(device).requires_grad_()
    teacher = torch.randn(shape, generator=g).to(device)
    # A mask with the paper's per-frame count, from random motion (one pixel per tubelet keeps it small).
    clip = torch.rand(config["batch"], 2 * frames, 1, height, width, generator=g)
    mask = motion_saliency_mask(clip, tubelet=(2, 1, 1), ratio=config["ratio"]).to(device)
    return student, teacher, mask


def loss_fn(method):
    from diffusers_tsa import crepa_loss, repa_loss, trd_loss, tsa_loss

    return {
        "naive": lambda s, t, m: naive_mtsa(s, t, m),
        "tsa": lambda s, t, m: tsa_loss(s, t, query_mask=m),
        "trd": lambda s, t, m: trd_loss(s, t),
        "repa": lambda s, t, m: repa_loss(s, t),
        "crepa": lambda s, t, m: crepa_loss(s, t),
    }[method]


def peak_memory_bytes(device):
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def matmul_seconds(queries, keys, out, device):
    """The time of one fp32 product `(M, C) @ (C, N)` of the loss's size into a preallocated `out` `(M, N)`, the
    machine's matmul rate now (the product alone: no allocation or first touch of its output)."""
    torch.matmul(queries, keys.T, out=out)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    torch.matmul(queries, keys.T, out=out)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def relation_flops(method, student, mask):
    """8 M N C a sample, the relation products and their gradients, for the relation losses; `None` otherwise."""
    batch, channels = student.shape[0], student.shape[-1]
    tokens = student[0, ..., 0].numel()
    queries = {"naive": int(mask.sum()), "tsa": int(mask.sum()), "trd": batch * tokens}.get(method)
    return None if queries is None else 8 * queries * tokens * channels


def worker(config_name, method, device):
    """Runs in its own process: one configuration, one method; prints a JSON line."""
    config = CONFIGS[config_name]
    student, teacher, mask = make_inputs(config, device)
    fn = loss_fn(method)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() if device == "cuda" else peak_memory_bytes(device)
    times, matmul_times = [], []
    flops = relation_flops(method, student, mask)
    for call in range(1 + config["repeats"]):  # the first call measures memory and warms up; the others time
        student.grad = None
        start = time.perf_counter()
        fn(student, teacher, mask).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        if call == 0:
            peak = peak_memory_bytes(device) - baseline
            if flops:  # one sample's queries against its keys, as large as the loss's products
                rows = student.detach()[0].flatten(0, 2).float()
                queries = rows[mask[0].flatten()] if method != "trd" else rows
                product = queries.new_empty(queries.shape[0], rows.shape[0])
        if flops and call > 0:  # interleaved with the timed calls, so that both see the same load
            matmul_times.append(matmul_seconds(queries, rows, product, device))
    seconds = statistics.median(times[1:])
    rates = {}
    if flops:
        matmul_flops = 2 * queries.shape[0] * rows.shape[0] * rows.shape[1]
        rates = {
            "gflops": flops / seconds / 1e9,
            "matmul_gflops": matmul_flops / min(matmul_times) / 1e9,
        }
        rates["of_matmul_rate"] = rates["gflops"] / rates["matmul_gflops"]
    print(
        json.dumps(
            {
                "config": config_name,
                "method": method,
                "seconds": seconds,
                "peak_mib": peak / 2**20,
                # TRD: every token a query; REPA and CREPA compare tokens at the same position, no relations
                "queries": {"trd": student[..., 0].numel(), "naive": int(mask.sum()), "tsa": int(mask.sum())}.get(
                    method
                ),
                **rates,
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker, args.device)

    rows = []
    load_before = os.getloadavg()
    for config_name in args.configs:
        for method in args.methods:
            cmd = [sys.executable, __file__, "--device", args.device, "--worker", config_name, method]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:  # e.g. the naive formula running out of memory
                reason = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
                rows.append({"config": config_name, "method": method, "skipped": reason})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)

    by_key = {(r["config"], r["method"]): r for r in rows if "seconds" in r}
    for r in rows:
        naive = by_key.get((r["config"], "naive"))
        if "seconds" in r and naive:
            r["time_vs_naive"] = r["seconds"] / naive["seconds"]
            r["memory_vs_naive"] = r["peak_mib"] / naive["peak_mib"]

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"loss_{args.device}.json"
    load = {"before": load_before, "after": os.getloadavg()}
    command = "python benchmarks/bench_loss.py " + " ".join(sys.argv[1:])
    out.write_text(
        json.dumps(
            {
                "command": command,
                "device": device_name,
                "torch": torch.__version__,
                "load_average": load,
                "configs": CONFIGS,
                "results": rows,
            },
            indent=2,
        )
    )
    lines = [
        f"Loss forward + backward on {device_name}, torch {torch.__version__}: `{command}`.",
        f"Load average (1, 5, 15 min) before {load['before']}, after {load['after']}.",
        "",
        "| config | method | queries | time (s) | peak memory (MiB) | time / naive | memory / naive | GFLOP/s | of matmul rate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['config']} | {r['method']} | | skipped: {r['skipped']} | | | | | |")
            continue
        ratios = [f"{r[k]:.2f}" if k in r else "" for k in ("time_vs_naive", "memory_vs_naive")]
        ratios += [f"{r['gflops']:.0f}", f"{r['of_matmul_rate']:.0%}"] if "gflops" in r else ["", ""]
        lines.append(
            f"| {r['config']} | {r['method']} | {r['queries'] or ''} | {r['seconds']:.3f} | {r['peak_mib']:.0f} | "
            + " | ".join(ratios)
            + " |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"Wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
