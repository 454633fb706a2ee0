"""Render the benchmark JSON files in bench/results/ as Markdown tables (for docs/benchmarks.md).

python bench/report.py bench/results/train_cpu.json bench/results/retrieval_cpu.json ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def machine_line(m: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in m.items())


def train_table(d: dict) -> str:
    peaks = d["matmul_peak_flops"]
    if not isinstance(peaks, dict):  # files written before per-precision peaks: one peak of d["peak_dtype"]
        peaks = {"bf16" if "bfloat16" in d["peak_dtype"] else "fp32": peaks}
    for r in d["rows"]:
        if "oom" not in r:
            r["mfu"] = r["flops_per_step"] / r["step_s"] / peaks.get(r["precision"], max(peaks.values()))
    peak_text = ", ".join(f"{p} {v / 1e9:,.0f} GFLOP/s" for p, v in peaks.items())
    lines = [
        f"Machine: {machine_line(d['machine'])}"
        + (f"; model {d['model']}" if "model" in d else "")
        + f"; measured matmul peak {peak_text} (MFU uses the row's precision, else the highest peak).",
        "",
        "| model | batch | step | precision | variant | quadruplets/s | s/step | "
        "GFLOP/step | MFU | speed-up vs naive | peak RSS MiB | peak GPU MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        head = (
            f"| {r['kind']} | {r['batch']} | {r['impl']} | {r['precision']} | {r.get('variant', 'plain')} |"
        )
        if "oom" in r:
            lines.append(head + " out of memory | | | | | | |")
            continue
        speedup = f"{r.get('speedup_vs_naive', 1.0):.2f}x" + (
            f" ({r['naive_precision']})" if "naive_precision" in r else ""
        )
        lines.append(
            f"{head} {r['quadruplets_per_s']:.2f} | {r['step_s']:.3f} | "
            f"{r['flops_per_step'] / 1e9:,.0f} | {100 * r['mfu']:.1f}% | "
            f"{speedup} | {r['peak_rss_mib']:.0f} | "
            f"{'%.0f' % r['peak_gpu_mib'] if 'peak_gpu_mib' in r else '-'} |"
        )
    for r in d.get("skipped", []):
        lines.append(
            f"| {r['kind']} | {r['batch']} | {r['impl']} | {r['precision']} | "
            f"{r['variant']} | not run (past the deadline) | | | | | | |"
        )
    return "\n".join(lines)


def collection_table(d: dict) -> str:
    lines = [
        f"Machine: {machine_line(d['machine'])}.",
        "",
        "| model | modality | items | command | device | precision | DataLoader "
        "workers | items/s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["results"]:
        if r["command"] == "search":
            lines.append(
                f"| (tiny, dim {r['dim']}) | text query | {r['items']:,} | search | cpu | fp32 | - | "
                f"{1000 / r['median_ms']:.1f} ({r['median_ms']:.1f} ms each) | {r['peak_rss_mib']:.0f} |"
            )
            continue
        lines.append(
            f"| {r['model']} | {r['modality']} | {r['items']:,} | {r['command']} "
            f"| {r.get('device', 'cpu')} | {r.get('precision', 'fp32')} | "
            f"{r['workers']} | {r['items_per_s']:.1f} | {r['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def retrieval_table(d: dict) -> str:
    lines = [
        f"Machine: {machine_line(d['machine'])}; {d['threads']} threads.",
        "",
        "| gallery | dim | method | queries/s | speed-up vs brute force | "
        "recall@10 vs exact | search peak RSS MiB | stored gallery MiB | build s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        lines.append(
            f"| {r['n']:,} | {r['dim']} | {r['method']} | {r['qps']:.1f} | "
            f"{r['speedup_vs_brute']:.1f}x | {r['recall@10_vs_exact']:.3f} | "
            f"{r['peak_rss_mib']:.0f} | {r['data_rss_mib']:.0f} | {r['build_s']:.1f} |"
        )
    return "\n".join(lines)


def inference_table(d: dict) -> str:
    lines = [
        f"Machine: {machine_line(d['machine'])}; {d['n']:,} embeddings of dim {d['dim']} on {d['device']}.",
        "",
        "| operation | M items/s | ms per 1M |",
        "|---|---|---|",
    ]
    for name, r in d["rows"].items():
        lines.append(f"| {name} | {r['items_per_s'] / 1e6:.2f} | {1e3 * r['seconds'] * 1e6 / d['n']:.1f} |")
    return "\n".join(lines)


def embed_table(d: dict) -> str:
    lines = [
        f"Machine: {machine_line(d['machine'])}; model {d['model']}, {d['n']} quadruplets.",
        "",
        "| processes | threads/process | DataLoader workers | device | precision | images/s | texts/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        lines.append(
            f"| {r['processes']} | {r['threads_per_process']} | {r['workers']} | "
            f"{r['device']} | {r['precision']} | {r['images_per_s']:.1f} | "
            f"{r['texts_per_s']:.1f} |"
        )
    return "\n".join(lines)


def compressed_table(d: dict) -> str:
    a = d["args"]
    lines = [
        f"Machine: {machine_line(d['machine'])}; {a['n']:,} x {a['dim']} "
        f"({a['data']}), nlist {a['nlist']}, nprobe {a['nprobe']}, "
        f"{a['queries']} queries, {a['threads']} threads. Exact search (vectors "
        f"streamed from disk): {d['exact_search_s']:.1f} s "
        f"({d['exact_qps']:.1f} queries/s). Index RAM "
        f"{d['index_ram_total'] / 2**30:.2f} GiB = "
        f"{d['ram_fraction_of_flat']:.3f} "
        f"of the flat index's {d['flat_index_bytes'] / 2**30:.1f} GiB; train "
        f"{d['train_s']:.0f} s, build {d['build_s']:.0f} s.",
        "",
        "| nprobe | rerank | exact re-rank per result | recall@10 vs exact | "
        "search s (cold) | search s (warm) | speed-up cold | speed-up warm | "
        "queries/s warm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        lines.append(
            f"| {r.get('nprobe', a['nprobe'])} | {r['rerank']} | "
            f"{r.get('exact_factor', 10)} | {r['recall@10']:.3f} | "
            f"{r['search_s_cold']:.2f} | {r['search_s_warm']:.2f} | "
            f"{r['speedup_cold']:.0f}x | {r['speedup_warm']:.0f}x | {r['qps_warm']:.0f} |"
        )
    return "\n".join(lines)


def text_context_table(d: dict) -> str:
    """bench/text_context.py: one text-tower training step per context, ms and ratio to 24 tokens."""
    kinds = list(d["rows"][0]["seconds"])
    lines = [
        f"Machine: {machine_line(d['machine'])}",
        "",
        "| world | batch | longest caption (tokens) | cut at 24 | "
        + " | ".join(f"{k} ms (x)" for k in kinds)
        + " |",
        "|---|---|---|---|" + "---|" * len(kinds),
    ]
    for r in d["rows"]:
        cells = [f"{1000 * r['seconds'][k]:.1f} ({r['vs context 24'][k]:.2f})" for k in kinds]
        sizes = [r["world"], r["batch"], r["longest caption (tokens)"], r["captions cut at 24 tokens"]]
        lines.append("| " + " | ".join(map(str, [*sizes, *cells])) + " |")
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        d = json.loads(Path(path).read_text())
        name = Path(path).stem
        render = (
            train_table
            if "train" in name
            else collection_table
            if "collection" in name
            else compressed_table
            if "compressed" in name
            else retrieval_table
            if "retrieval" in name
            else inference_table
            if "inference" in name
            else text_context_table
            if "text_context" in name
            else embed_table
        )
        print(f"### {name}\n\n{render(d)}\n")


if __name__ == "__main__":
    main()
