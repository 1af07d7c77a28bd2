"""`transformers serve` under load: many requests at once from the `openai` client (tiny profile, CPU).

    .venv/bin/python -m benchmarks.serve_load [--requests 16] [--concurrency 16] [--model FOLDER]

The served model is notebook 05's merged model (`outputs/tiny/merged`, or `$VOXTRAL_OUTPUTS/tiny/merged`) when
it is there; otherwise it is built the way notebook 05 builds it (the base model with notebook 03's adapter,
merged with `merge_and_unload`), or, with no adapter trained, the tiny base model as it is (serving does the
same work whatever the weights). `--model` names another folder.

For each setting (`transformers serve` as it starts by default, then with `--continuous-batching`) a server is
started on 127.0.0.1 and a free port (`tutorial_kit.serving.start_server`), warmed up, timed on three requests one
after another, and then sent `--requests` requests of the test split's rows (several rows reused when there are
more requests than rows), `--concurrency` at a time, from as many threads. Each request asks about one row, with
the audio as bytes (`tutorial_kit.serving.question_messages`), greedy, and its answer is compared with the answer
`pipeline("any-to-any")` gives for the same row on the same model: a request whose answer belongs to another row
(mixed up), that failed, or that never came back (lost) is counted. Rows are taken so that their expected answers
differ as much as the model allows, and the report says how many distinct answers there were (a random tiny
model often gives several rows the same answer, and two such rows swapped cannot be told apart).

Bounded: `--requests` requests at most, each with `--request-timeout` seconds, the whole burst with
`--deadline` seconds; only 127.0.0.1 is asked. Prints a table and writes benchmarks/results/serve_load.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.run import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FALLBACK_LINE = "Only LLMs support continuous batching"  # transformers 5.25's log line when it does not apply


def served_model(profile, given: str | None) -> tuple[Path, str]:
    """The folder to serve, and where it came from (see the module's docstring)."""
    from helpers.loading import adapter_location, load_model_and_processor
    from helpers.profiles import cache_dir, outputs_dir

    if given:
        return Path(given), "given with --model"
    saved = outputs_dir(profile, on_drive=False) / "merged"
    if (saved / "config.json").exists():
        return saved, "notebook 05's merged model"
    adapter = Path(adapter_location(profile))
    folder = cache_dir() / "serve-load-model"
    if (adapter / "adapter_config.json").exists():
        model, processor = load_model_and_processor(profile, adapter=adapter, load_in_4bit=False)
        model, source = model.merge_and_unload(), f"the base model with the adapter {adapter}, merged as notebook 05 does"
    else:
        model, processor = load_model_and_processor(profile)
        source = "the tiny base model (no adapter trained: serving does the same work whatever the weights)"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, source


def pipeline_answers(profile, folder: Path, rows: list[dict]) -> list[str]:
    """What notebook 05's pipeline answers for `rows`, with the model loaded from `folder` as a server loads it."""
    from transformers import pipeline

    from helpers.loading import load_model_and_processor
    from helpers.tasks import build_conversation

    model, processor = load_model_and_processor(replace(profile, model_id=str(folder), load_in_4bit=False))
    pipe = pipeline("any-to-any", model=model, processor=processor)
    outputs = pipe(text=[build_conversation(row) for row in rows], batch_size=4, max_new_tokens=profile.max_new_tokens,
                   do_sample=False, return_full_text=False)
    return [out[0]["generated_text"].strip() for out in outputs]


def rows_with_distinct_answers(rows: list[dict], answers: list[str], count: int) -> list[int]:
    """`count` row indices: first one row per distinct expected answer, then the other rows, then again from the
    start, so that as few requests as possible share an expected answer."""
    first_of_each = list({answer: index for index, answer in reversed(list(enumerate(answers)))}.values())
    first_of_each.sort()
    order = first_of_each + [i for i in range(len(rows)) if i not in first_of_each]
    return [order[i % len(order)] for i in range(count)]


def ask(client, model_id: str, messages: list[dict], max_tokens: int) -> tuple[str | None, str | None, float, float]:
    """One request: (answer, error, start, end), times from `time.perf_counter`."""
    start = time.perf_counter()
    try:
        reply = client.chat.completions.create(model=model_id, messages=messages, max_tokens=max_tokens, temperature=0)
        return reply.choices[0].message.content.strip(), None, start, time.perf_counter()
    except Exception as error:  # counted and reported, never retried
        return None, f"{type(error).__name__}: {error}"[:300], start, time.perf_counter()


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def measure(folder: Path, profile, rows: list[dict], expected: list[str], order: list[int], concurrency: int,
            continuous_batching: bool, request_timeout: float, deadline: float) -> dict:
    from openai import OpenAI

    from tutorial_kit.serving import question_messages, start_server

    started = time.perf_counter()
    server = start_server(folder, continuous_batching=continuous_batching)
    startup = time.perf_counter() - started
    try:
        client = OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0, timeout=request_timeout)
        model_id = client.models.list().data[0].id
        messages = {index: question_messages(rows[index]) for index in set(order)}  # built before the clock starts
        ask(client, model_id, messages[order[0]], profile.max_new_tokens)  # warm-up, not counted
        one_at_a_time = [ask(client, model_id, messages[index], profile.max_new_tokens) for index in order[:3]]
        single = statistics.median(end - start for _, _, start, end in one_at_a_time)

        burst_start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(ask, client, model_id, messages[index], profile.max_new_tokens) for index in order]
            done, not_done = wait(futures, timeout=deadline)
            for future in not_done:
                future.cancel()
            if not_done:
                server.stop()  # fails what is still running, so that the pool can finish
        results = [future.result() if future in done else (None, "lost: no answer before the deadline", 0.0, 0.0)
                   for future in futures]
        answered = [r for r in results if r[0] is not None]
        wall = max((end for _, _, _, end in answered), default=burst_start) - burst_start
        latencies = [end - start for _, _, start, end in answered]
        correct = [r[0] == expected[index] for r, index in zip(results, order)]
        mixed_up = [r[0] is not None and r[0] != expected[index] and r[0] in {expected[i] for i in order}
                    for r, index in zip(results, order)]
        log = server.log_tail(10_000)
    finally:
        server.stop()
    return {
        "continuous_batching_flag": continuous_batching,
        "continuous_batching_applied": continuous_batching and FALLBACK_LINE not in log,
        "server_said": next((line.strip() for line in log.splitlines() if FALLBACK_LINE in line), None),
        "startup_s": round(startup, 1),
        "one_request_alone_s": round(single, 3),
        "requests": len(order),
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(answered) / wall, 2) if wall > 0 else None,
        "latency_s": {"p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
                      "max": round(max(latencies), 3) if latencies else None},
        "answered": len(answered),
        "correct": sum(correct),
        "wrong": sum(r[0] is not None and not ok for r, ok in zip(results, correct)),
        "answer_of_another_row": sum(mixed_up),
        "errors": [r[1] for r in results if r[1] is not None],
    }


def table(report: dict) -> str:
    lines = ["| server | requests | at once | wall s | requests/s | p50 s | p90 s | max s | one alone s | correct | failed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        name = "--continuous-batching" if run["continuous_batching_flag"] else "default (generate)"
        if run["continuous_batching_flag"] and not run["continuous_batching_applied"]:
            name += " (fell back to generate)"
        latency = run["latency_s"]
        lines.append(f"| {name} | {run['requests']} | {run['concurrency']} | {run['wall_s']} | {run['throughput_rps']} | "
                     f"{latency['p50']} | {latency['p90']} | {latency['max']} | {run['one_request_alone_s']} | "
                     f"{run['correct']}/{run['requests']} | {len(run['errors'])} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16, help="requests in the burst (default 16)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default 16)")
    parser.add_argument("--model", help="the folder to serve (default: notebook 05's merged model, see above)")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds each request may take")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds the whole burst may take")
    parser.add_argument("--json", type=Path, default=RESULTS / "serve_load.json")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.requests <= 1000 or not 1 <= arguments.concurrency <= 256:
        parser.error("--requests must be 1 to 1000 and --concurrency 1 to 256")
    os.environ["VOXTRAL_PROFILE"] = "tiny"

    from helpers.data import load_splits
    from helpers.profiles import get_profile

    profile = get_profile("tiny")
    load_before = [round(x, 2) for x in os.getloadavg()]
    folder, source = served_model(profile, arguments.model)
    test = load_splits(profile)["test"]
    rows = [test[i] for i in range(len(test))]
    expected = pipeline_answers(profile, folder, rows)
    order = rows_with_distinct_answers(rows, expected, arguments.requests)
    print(f"serving {folder} ({source}); {len(set(expected[i] for i in order))} distinct expected answers "
          f"among the {len(set(order))} rows sent", flush=True)

    runs = []
    for continuous_batching in (False, True):
        runs.append(measure(folder, profile, rows, expected, order, arguments.concurrency, continuous_batching,
                            arguments.request_timeout, arguments.deadline))
        print(json.dumps(runs[-1]), flush=True)
    import transformers

    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "transformers": transformers.__version__,
              "load_average_before": load_before,  # other work on the machine slows a 2-core CPU a lot
              "profile": "tiny", "model": source, "max_new_tokens": profile.max_new_tokens,
              "rows_sent": len(set(order)), "distinct_expected_answers": len(set(expected[i] for i in order)),
              "runs": runs}
    print(table(report))
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {arguments.json}")
    return report


if __name__ == "__main__":
    main()
