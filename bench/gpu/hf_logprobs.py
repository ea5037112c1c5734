#!/usr/bin/env python3
"""Teacher-forced top-N next-token logprobs from transformers' Qwen3MoeForCausalLM: the model's own reference
implementation, on the same checkpoints and token ids as bench/gpu/checks.ts gives our backends.

    python3 bench/gpu/hf_logprobs.py --jobs JOBS.json --out OUT.json

JOBS.json: {"top": 5, "jobs": [{"name": ..., "dir": checkpoint directory, "tokens": [ids]}]}.
OUT.json:  {"info": "...", "results": {name: {"top_ids": [[...] per position], "top_logprobs": [[...]]} or {"error": "..."}}}.
Weights are upcast to float32 (exact for bf16) and run in float32 with TF32 off, on CUDA when torch sees a GPU.
Exit status 3, with the reason as the last line of stderr, when torch or transformers cannot be imported.
"""
import argparse
import json
import sys
import time
import traceback


def load(cls, path, torch):
    """float32, with the reference ("eager") attention and experts: transformers 5 names the dtype `dtype` and
    chooses among experts backends; older versions take `torch_dtype` and have one experts loop."""
    tries = [
        dict(dtype=torch.float32, attn_implementation="eager", experts_implementation="eager"),
        dict(dtype=torch.float32, attn_implementation="eager"),
        dict(torch_dtype=torch.float32, attn_implementation="eager"),
    ]
    for i, kwargs in enumerate(tries):
        try:
            return cls.from_pretrained(path, **kwargs)
        except (TypeError, ValueError):
            if i == len(tries) - 1:
                raise
    raise AssertionError("unreachable")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    try:
        import torch
        import transformers
        from transformers import Qwen3MoeForCausalLM
    except Exception as e:  # noqa: BLE001 - any import failure means the reference is not available here
        print(f"{sys.executable}: no torch + transformers ({type(e).__name__}: {e})", file=sys.stderr)
        return 3

    with open(args.jobs) as f:
        spec = json.load(f)
    top = int(spec.get("top", 5))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    where = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    info = f"torch {torch.__version__}, transformers {transformers.__version__}, float32 on {where}"
    print(f"[hf_logprobs] {info}", flush=True)

    results = {}
    for job in spec["jobs"]:
        name = job["name"]
        t0 = time.time()
        try:
            model = load(Qwen3MoeForCausalLM, job["dir"], torch)
            model.to(device).eval()
            ids = torch.tensor([job["tokens"]], dtype=torch.long, device=device)
            with torch.no_grad():
                logits = model(input_ids=ids, use_cache=False).logits[0].float()
            lp = torch.log_softmax(logits, dim=-1)
            vals, idx = torch.topk(lp, top, dim=-1)
            results[name] = {"top_ids": idx.cpu().tolist(), "top_logprobs": vals.cpu().tolist()}
            print(f"[hf_logprobs] {name}: {len(job['tokens'])} positions in {time.time() - t0:.1f} s", flush=True)
            del model, logits, lp
            if device == "cuda":
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001 - one shape failing must not hide the others
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}

    with open(args.out, "w") as f:
        json.dump({"info": info, "results": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
