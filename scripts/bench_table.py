"""Prints the benchmark suite's results (Google Benchmark JSON) as one table.

Each row: what was measured, ckptdb's figure and the baseline's (medians over
the rounds, measured interleaved in the same run on the same bytes), the
median of the per-round ratios with their min-max, and the target. Under each
cold restore: the physical limit (the step's stored bytes at the disk's cold
sequential read rate, measured in the same rounds, in logical GB/s) and
ckptdb's time over it.
"""
import json
import sys

# name prefix, counter prefix -> (what, unit, target)
ROWS = [
    ("save/trajectory_f32/", "", "save until durable vs safetensors file, trajectory f32", "GB/s",
     ">= 1.0"),
    ("save/trajectory_bf16/", "", "save until durable vs safetensors file, trajectory bf16",
     "GB/s", ">= 1.0"),
    ("save/trained_f32/", "", "save until durable vs safetensors file, trained-like f32", "GB/s",
     ">= 1.0"),
    ("save/layered_f32/", "", "  ... 1 KiB-1 MiB tensors (a small transformer's), f32", "GB/s",
     ">= 1.0"),
    ("save_delta/trajectory_f32/", "", "  ... with delta encoding (chain 4), trajectory f32", "GB/s",
     ">= 1.0"),
    ("save_delta/trajectory_bf16/", "", "  ... with delta encoding (chain 4), trajectory bf16",
     "GB/s", ">= 1.0"),
    ("save/trajectory_f32/", "stall_", "trainer's stall (async Save) / safetensors write, f32",
     "ms", "<= 0.2"),
    ("save/trajectory_bf16/", "stall_", "trainer's stall (async Save) / safetensors write, bf16",
     "ms", "<= 0.2"),
    ("save/layered_f32/", "stall_", "  ... 1 KiB-1 MiB tensors (a small transformer's), f32",
     "ms", "<= 0.2"),
    ("restore_owned/trajectory_f32/", "", "cold restore, new process, vs safetensors, f32",
     "GB/s", ">= 1.5"),
    ("restore_template/trajectory_f32/", "", "  ... into the caller's template, f32", "GB/s",
     ">= 1.5"),
    ("restore_owned/trajectory_bf16/", "", "cold restore, new process, vs safetensors, bf16",
     "GB/s", ">= 1.5"),
    ("restore_template/trajectory_bf16/", "", "  ... into the caller's template, bf16", "GB/s",
     ">= 1.5"),
    ("restore_owned/trained_f32/", "", "cold restore, new process, vs safetensors, trained f32",
     "GB/s", ">= 1.5"),
    ("restore_owned/layered_f32/", "", "  ... 1 KiB-1 MiB tensors (a small transformer's), f32",
     "GB/s", ">= 1.5"),
    ("restore_owned_delta/trajectory_f32/", "",
     "  ... a delta of depth 4 (5 chunks read per chunk), f32", "GB/s", ">= 1.5"),
    ("restore_owned_delta/trajectory_bf16/", "",
     "  ... a delta of depth 4 (5 chunks read per chunk), bf16", "GB/s", ">= 1.5"),
    ("async_blocking_all_new/", "", "async save blocking / memcpy (all new)", "ms", "<= 1.2"),
    ("async_blocking_90pct_frozen/", "", "async save blocking / memcpy (90% unchanged)", "ms",
     "<= 0.2"),
    ("async_blocking_90pct_declared/", "", "  ... the 90% declared in assume_unchanged", "ms",
     "<= 0.2"),
    ("resave_unchanged/", "", "re-save unchanged vs safetensors file", "ms", ">= 8"),
]


def main(path):
    results = json.load(open(path))["benchmarks"]
    failed = [r for r in results if r.get("error_occurred")]
    for result in failed:
        print(f"{result['name']}: {result.get('error_message', 'failed')}", file=sys.stderr)
    if failed or not results:
        sys.exit(1)
    rounds = max(int(r.get("rounds", 0)) for r in results)
    print(f"medians of {rounds} interleaved rounds; ratio: median (min-max) of the per-round "
          "ratios")
    print(f"{'measurement':<56} {'size':>6} {'ckptdb':>8} {'baseline':>8} "
          f"{'ratio':>18}  target")
    for prefix, counter, what, unit, target in ROWS:
        for result in results:
            if not result["name"].startswith(prefix) or counter + "ratio" not in result:
                continue
            size = result["name"][len(prefix):].split("/")[0]
            if unit == "ms":
                mine = result[counter + "ckptdb_seconds"] * 1e3
                base = result[counter + "baseline_seconds"] * 1e3
            else:
                gigabytes = result[counter + "bytes"] / 1e9
                mine = gigabytes / result[counter + "ckptdb_seconds"]
                base = gigabytes / result[counter + "baseline_seconds"]
            ratio = (f"{result[counter + 'ratio']:.2f} ({result[counter + 'ratio_min']:.2f}-"
                     f"{result[counter + 'ratio_max']:.2f})")
            print(f"{what:<56} {size:>6} {mine:>8.3f} {base:>8.3f} {ratio:>18}  "
                  f"{target} ({unit})")
            if "limit_seconds" in result:
                # The disk's bound on this restore: the step's stored bytes at
                # the cold sequential read rate measured in the same rounds.
                limit = gigabytes / result["limit_seconds"]
                over = (f"{result['over_limit']:.2f} ({result['over_limit_min']:.2f}-"
                        f"{result['over_limit_max']:.2f})")
                print(f"{'    physical limit (stored bytes / cold read rate)':<56} {size:>6} "
                      f"{limit:>8.3f} {'':>8} {over:>18}  time / limit <= 1.15")
    for result in results:
        name = result["name"]
        if name.startswith("save/") or name.startswith("save_delta/"):
            state = name.split("/")[1]
            size = name.split("/")[2]
            if name.startswith("save_delta/"):
                print(f"{'stored / logical, delta (cycle mean), ' + state:<56} "
                      f"{size:>6} {result['stored_over_logical_mean']:>8.3f}{'':>28}<= 0.65 f32")
                continue
            print(f"{'stored / logical bytes, ' + state:<56} {size:>6} "
                  f"{result['stored_over_logical']:>8.3f}")
            print(f"{'write amplification (device / stored), ' + state:<56} {size:>6} "
                  f"{result['write_amplification']:>8.3f}{'':>28}<= 1.2")
        if name.startswith("restore_") and result.get("cold_whole_cache") == 0:
            print(f"note: {name}: not root, so only the files' pages were dropped before each "
                  "restore", file=sys.stderr)
        if name.startswith("gc/"):
            print(f"{'GC seconds per 100k chunks (' + name.split('/')[1] + ')':<56} "
                  f"{int(result['chunks']):>6} {result['seconds_per_100k_chunks']:>8.3f}"
                  f"{'':>28}<= 1 s")


if __name__ == "__main__":
    main(sys.argv[1])
