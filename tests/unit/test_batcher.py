import asyncio

import numpy as np
import pytest

from bigmodel.serve.batcher import Batcher, QueueFull, Timeout


def _double(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x * 2, "s": x.sum(axis=1)}


def test_concurrent_requests_are_merged_and_get_their_own_rows():
    sizes: list[int] = []

    async def main() -> None:
        b = Batcher(_double, max_batch_size=16, max_delay_s=0.01, on_batch=sizes.append)
        b.start()
        rng = np.random.default_rng(0)
        xs = [rng.standard_normal((int(rng.integers(1, 4)), 5)).astype(np.float32) for _ in range(40)]
        results = await asyncio.gather(*(b.submit(x, 5.0) for x in xs))
        for x, (out, queued) in zip(xs, results, strict=True):
            np.testing.assert_array_equal(out["y"], x * 2)
            np.testing.assert_allclose(out["s"], x.sum(axis=1), rtol=1e-6)
            assert queued >= 0
        await b.stop()

    asyncio.run(main())
    assert max(sizes) > 1 and max(sizes) <= 16  # merged, never past the limit


def test_full_queue_and_timeout():
    async def main() -> None:
        b = Batcher(_double, max_batch_size=4, max_queue=3)  # not started: nothing is taken off the queue
        x = np.ones((1, 2), np.float32)
        futs = [b.submit(x, 0.05) for _ in range(3)]
        with pytest.raises(QueueFull):
            b.submit(x, 0.05)
        for f in futs:
            with pytest.raises(Timeout):
                await f
        b.start()  # expired requests are skipped, the next one is served
        out, _ = await b.submit(x, 1.0)
        np.testing.assert_array_equal(out["y"], x * 2)
        await b.stop()

    asyncio.run(main())


def test_a_failing_model_fails_its_batch_only():
    calls = []

    def flaky(x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return _double(x)

    async def main() -> None:
        b = Batcher(flaky, max_batch_size=8)
        b.start()
        with pytest.raises(RuntimeError, match="boom"):
            await b.submit(np.ones((1, 2), np.float32), 1.0)
        out, _ = await b.submit(np.ones((1, 2), np.float32), 1.0)
        assert out["y"].tolist() == [[2.0, 2.0]]
        await b.stop()

    asyncio.run(main())
