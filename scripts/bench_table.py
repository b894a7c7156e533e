"""Prints the benchmark suite's results (Google Benchmark JSON) as one table.

Each row: what was measured, ckptdb's figure, the baseline measured in the
same run on the same bytes, their ratio, and the target the ratio is held to.
"""
import json
import sys

# name prefix -> (what, unit, better, target)
ROWS = [
    ("save_f32/", "save until durable vs raw write+fdatasync (float32)", "GB/s", ">= 1.0"),
    ("save_bf16/", "save until durable vs raw write+fdatasync (bfloat16)", "GB/s", ">= 1.0"),
    ("save_f32_1thread/", "save, 1 thread, vs raw write+fdatasync", "GB/s", ""),
    ("restore_cold/", "restore into caller buffers vs raw read, cold cache", "GB/s", ">= 0.8"),
    ("restore_warm/", "restore into caller buffers vs raw read, warm cache", "GB/s", ">= 0.8"),
    ("restore_warm_1thread/", "restore, 1 thread, vs raw read, warm cache", "GB/s", ""),
    ("async_blocking_all_new/", "async save blocking time vs memcpy (all new)", "ms", "<= 1.2"),
    ("async_blocking_90pct_frozen/", "async save blocking time vs memcpy (90% unchanged)", "ms",
     "<= 0.2"),
    ("async_blocking_90pct_declared/", "  ... the 90% declared in assume_unchanged", "ms",
     "<= 0.2"),
    ("resave_unchanged/", "re-save unchanged: times faster than raw write", "ms", ">= 8"),
]


def main(path):
    results = json.load(open(path))["benchmarks"]
    failed = [r for r in results if r.get("error_occurred")]
    for result in failed:
        print(f"{result['name']}: {result.get('error_message', 'failed')}", file=sys.stderr)
    if failed or not results:
        sys.exit(1)
    print(f"{'measurement':<56} {'size':>8} {'ckptdb':>9} {'baseline':>9} {'ratio':>7}  target")
    for prefix, what, unit, target in ROWS:
        for result in results:
            if not result["name"].startswith(prefix):
                continue
            size = result["name"][len(prefix):].split("/")[0]
            keys = [k for k in result if k.endswith("_ckptdb")]
            if not keys:
                continue
            mine = result[keys[0]]
            base = result[keys[0].replace("_ckptdb", "_baseline")]
            if unit == "ms":
                mine, base = mine * 1e3, base * 1e3
            print(f"{what:<56} {size:>8} {mine:>9.3f} {base:>9.3f} {result['ratio']:>7.2f}  "
                  f"{target} ({unit})")
    for result in results:
        name = result["name"]
        if name.startswith(("save_f32/", "save_bf16/")):
            print(f"{'stored / logical bytes, ' + name.split('/')[0][5:]:<56} "
                  f"{name.split('/')[1]:>8} {result['stored_over_logical']:>9.3f} "
                  f"{'':>9} {'':>7}  <= 0.85 (float32)")
            print(f"{'write amplification (device bytes / stored), ' + name.split('/')[0][5:]:<56} "
                  f"{name.split('/')[1]:>8} {result['write_amplification']:>9.3f} "
                  f"{'':>9} {'':>7}  <= 1.2")
        if name.startswith("gc/"):
            print(f"{'GC seconds per 100k chunks (' + name.split('/')[1] + ')':<56} "
                  f"{int(result['chunks']):>8} {result['seconds_per_100k_chunks']:>9.3f} "
                  f"{'':>9} {'':>7}  <= 1 s")


if __name__ == "__main__":
    main(sys.argv[1])
