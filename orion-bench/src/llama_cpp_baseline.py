"""The llama.cpp baseline of `orion bench model`: what a user who runs a model without a
server would compare Orion with, on the same file and the same machine.

`python3 -c "$(this file)" MODEL THREADS TOKENS RUNS < PROMPTS` loads MODEL with
llama-cpp-python (llama.cpp's own kernels); PROMPTS is JSON: `prompt` and `long` (ChatML
text, control tokens included). RUNS times it reads the prompt in one batch, then generates
TOKENS tokens greedily (the likeliest each time, end tokens included, so every run is as long),
then reads the long prompt in one batch. It prints one JSON line: the median rates, measured
the way Orion's are (generation from the first token sampled to the last), the resident
memory the loaded model added, and llama.cpp's version and the CPU features it was built for.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


# Reads two tokens in one batch with llama.cpp's extra buffer types (weight repacking, AMX
# among them) on, in a process of its own.
PROBE = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
llm.eval(llm.tokenize(b"hello there", add_bos=False))
"""


def extra_buffers_work(path):
    """Whether llama.cpp's extra buffer types run on this machine: some virtual machines list
    AMX among the CPU's features without enabling it, and llama.cpp's AMX kernels then fault
    on the first batch of more than one token. Where they do not run they are turned off, and
    the figures say so."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return probe.returncode == 0


def without_extra_buffers():
    # `Llama` takes its model's parameters from the bindings' defaults.
    bindings = llama_cpp.llama_cpp
    defaults = bindings.llama_model_default_params

    def params():
        p = defaults()
        p.use_extra_bufts = False
        return p

    bindings.llama_model_default_params = params


def main():
    path, threads, tokens, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    prompts = json.load(sys.stdin)
    extra = extra_buffers_work(path)
    if not extra:
        without_extra_buffers()
    before = rss_bytes()
    flash = os.environ.get("ORION_BENCH_FLASH_ATTN", "1") == "1"
    # A context just long enough for both prompts and the answer (llama.cpp allocates its
    # key-value cache for all of it at load), and batches as long, so that the long prompt is
    # read in one batch.
    llm = Llama(
        model_path=path,
        n_ctx=1024,
        n_batch=1024,
        n_ubatch=1024,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=flash,
        verbose=False,
    )
    vocab = llm.n_vocab()
    loaded = rss_bytes() - before
    ids = llm.tokenize(prompts["prompt"].encode(), add_bos=False, special=True)
    long_ids = llm.tokenize(prompts["long"].encode(), add_bos=False, special=True)
    prompt_rates, generation_rates, long_rates = [], [], []
    for _ in range(runs):
        llm.reset()
        started = time.perf_counter()
        llm.eval(ids)
        read = time.perf_counter()
        for n in range(1, tokens + 1):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(vocab,))
            token = int(np.argmax(logits))
            if n < tokens:
                llm.eval([token])
        done = time.perf_counter()
        prompt_rates.append(len(ids) / (read - started))
        generation_rates.append(tokens / (done - read))
        llm.reset()
        started = time.perf_counter()
        llm.eval(long_ids)
        long_rates.append(len(long_ids) / (time.perf_counter() - started))
    print(
        json.dumps(
            {
                "loaded_bytes": loaded,
                "prompt_tokens": len(ids),
                "prompt_tokens_per_s": statistics.median(prompt_rates),
                "generation_tokens_per_s": statistics.median(generation_rates),
                "generated_tokens": tokens,
                "long_prompt_tokens": len(long_ids),
                "prompt_ids": ids,
                "long_prompt_ids": long_ids,
                "long_prompt_tokens_per_s": statistics.median(long_rates),
                "about": "%s, flash attention %s%s; %s"
                % (
                    llama_cpp.__version__,
                    "on" if flash else "off",
                    "" if extra else ", extra buffer types off (they fault here)",
                    llama_cpp.llama_print_system_info().decode().strip(" |"),
                ),
            }
        )
    )


main()
