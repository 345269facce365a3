"""Generation in-process: the KV cache changes nothing but speed; sampling, text and stop rules."""

from __future__ import annotations

import asyncio

import pytest
import torch

from bigmodel.errors import BigModelError
from bigmodel.generation import Engine, GenerationParams, generate, stream
from bigmodel.generation.sampling import new_generator, sample
from bigmodel.generation.scheduler import QueueFull, Scheduler
from bigmodel.generation.text import TextStream
from bigmodel.models.transformer import Transformer


@pytest.fixture(scope="module")
def lm() -> Transformer:
    torch.manual_seed(0)
    return Transformer(2, 32, 2, 64).eval()


def greedy_without_cache(model: Transformer, prompt: bytes, n: int) -> list[int]:
    seq = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt) :]


def greedy_with_engine(model: Transformer, prompt: bytes, n: int) -> list[int]:
    engine, out = Engine(model, slots=1), []
    logits = engine.prefill(0, list(prompt))
    for i in range(n):
        out.append(int(logits.argmax()))
        logits = engine.decode({0: (out[-1], len(prompt) + i)})[0]
    return out


def test_greedy_with_the_cache_equals_greedy_without_it_token_for_token(lm):
    for prompt in (b"x", b"def main():", bytes(range(40, 80))):
        n = 64 - len(prompt)
        assert greedy_with_engine(lm, prompt, n) == greedy_without_cache(lm, prompt, n)


def test_one_decode_step_for_many_sequences_equals_each_alone(lm):
    prompts = [b"a", b"hello there", b"\xc3\xa9t\xc3\xa9"]
    engine = Engine(lm, slots=4)
    logits = [engine.prefill(s, list(p)) for s, p in enumerate(prompts)]
    nxt = [int(row.argmax()) for row in logits]
    rows = {s: (nxt[s], len(p)) for s, p in enumerate(prompts)}
    batched = engine.decode(rows)
    for s, p in enumerate(prompts):
        alone = greedy_without_cache(lm, p, 2)
        assert alone[0] == nxt[s]
        assert int(batched[s].argmax()) == alone[1]


def test_sampling_is_reproducible_for_a_seed_and_differs_across_seeds(lm):
    params = GenerationParams(max_tokens=40, temperature=1.0, top_p=0.9, top_k=50, seed=7)
    a, b = generate(lm, "seed", params), generate(lm, "seed", params)
    assert a.text == b.text and a.completion_tokens == 40
    others = {generate(lm, "seed", params.model_copy(update={"seed": s})).text for s in range(5)}
    assert len(others) > 1


def test_top_k_one_is_greedy(lm):
    sampled = generate(lm, "k", GenerationParams(max_tokens=30, top_k=1, seed=3)).text
    assert sampled == generate(lm, "k", GenerationParams(max_tokens=30, temperature=0)).text


def test_text_never_splits_a_multibyte_character():
    t = TextStream()
    out = [t.push(b) for b in "é€😀".encode()]
    assert out == ["", "é", "", "", "€", "", "", "", "😀"]
    t = TextStream()
    assert t.push(0xE2) == "" and t.finish() == "\ufffd"  # an unfinished character at the end


def test_stop_strings_end_the_text_and_never_leak_in_a_stream():
    t = TextStream(stop=("END", "\n\n"))
    shown = "".join(t.push(b) for b in b"abc EN")
    assert shown == "abc "  # "EN" may start "END": held back
    shown += "".join(t.push(b) for b in b"D more")
    assert t.stopped and shown == "abc " and t.text == "abc "
    t = TextStream(stop=("END",))
    assert "".join(t.push(b) for b in b"ENx") == "ENx"  # not a stop after all: released


def test_stop_in_generate_cuts_the_completion(lm):
    full = generate(lm, "abc", GenerationParams(max_tokens=30, temperature=0)).text
    cut = full[5:8]
    done = generate(lm, "abc", GenerationParams(max_tokens=30, temperature=0, stop=[cut]))
    assert done.finish_reason == "stop" and done.text == full[: full.index(cut)]


def test_params_are_checked_with_the_key_named(lm):
    for bad, word in [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ["x"] * 1000}, "stop"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"nope": 1}, "nope"),
    ]:
        with pytest.raises(BigModelError, match=word):
            GenerationParams.parse(bad)
    with pytest.raises(BigModelError, match="context of 64"):
        generate(lm, "x" * 64)
    with pytest.raises(BigModelError, match="exceeds the model's context"):
        generate(lm, "x", GenerationParams(max_tokens=64))
    with pytest.raises(BigModelError, match="empty"):
        generate(lm, "")


def test_generation_stops_at_the_end_of_the_context(lm):
    chunks = list(stream(lm, "x" * 60, GenerationParams(temperature=0)))
    assert chunks[-1].finish_reason == "length" and chunks[-1].tokens == 4


def test_continuous_batching_gives_each_request_what_it_would_get_alone(lm):
    params = GenerationParams(max_tokens=20, temperature=0)
    prompts = ["one", "twö", "three three", "4", "five", "sixsix", "s"]

    async def main() -> list[str]:
        sched = Scheduler(lm, slots=3, max_waiting=16)  # more requests than slots: some wait, join later
        sched.start()
        try:

            async def one(p: str) -> str:
                req = sched.submit(list(p.encode()), params)
                return "".join([c.text async for c in req.chunks()])

            return await asyncio.gather(*[one(p) for p in prompts])
        finally:
            await sched.stop()

    assert asyncio.run(main()) == [generate(lm, p, params).text for p in prompts]


async def _collect(req):
    return [c async for c in req.chunks()]


def test_a_cancelled_sequence_frees_its_slot_and_a_full_queue_refuses(lm):
    async def main() -> None:
        sched = Scheduler(lm, slots=1, max_waiting=1)
        sched.start()
        try:
            long = sched.submit([1, 2, 3], GenerationParams(max_tokens=60, temperature=0))
            await anext(long.chunks())
            queued = sched.submit([4], GenerationParams(max_tokens=3, temperature=0))
            with pytest.raises(QueueFull):
                sched.submit([5], GenerationParams(max_tokens=3))
            sched.cancel(long)  # the client went away: the waiting request gets the slot
            got = await asyncio.wait_for(_collect(queued), 10)
            assert got[-1].finish_reason == "length" and got[-1].tokens == 3
            for _ in range(100):  # the worker frees the slot right after sending the last chunk
                if sched.running == 0:
                    break
                await asyncio.sleep(0.01)
            assert sched.running == 0 and sched.waiting == 0
        finally:
            await sched.stop()

    asyncio.run(main())


def test_tiny_temperatures_sample_the_most_likely_byte():
    logits = torch.tensor([1.0, 3.0, 2.0, -50.0])
    for t in (1e-300, 5e-324, 1e-45):
        params = GenerationParams(temperature=t)
        assert sample(logits, params, new_generator(0)) == 1
    with pytest.raises(ValueError, match="not finite"):
        sample(torch.tensor([float("nan"), 1.0]), GenerationParams(), new_generator(0))
