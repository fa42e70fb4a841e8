"""Image filters in a parallel batch flow: real work, offline, with a number and a picture.

Every (image, filter) pair runs the same small flow: Load -> Apply -> Save.
`AsyncBatchFlow` runs the pairs one after another; `AsyncParallelBatchFlow`
runs several at once. Pillow does its work in C and lets go of Python's lock
while it does, so the pairs really overlap on the machine's cores: the nodes
are plain sync nodes with `offload=True`, which braidflow runs in its own
bounded pool of threads while the event loop goes on.

Each parallel sub-flow works on its own view of `shared` (`isolate=True`) and
their outputs are merged at the end by a declared rule, so no two pairs can
overwrite each other's entries.

The images are generated on the spot (gradients, shapes and noise), so the
example needs no files and no network. The images and a timeline of the
parallel run go to a temporary directory, removed at exit, or to --out DIR,
where they stay.

Run it with: python examples/image_filters.py [--images 6] [--size 800] [--out DIR]
(`--fast` runs a small version, for tests; `--progress` shows a progress bar.)
"""

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageOps

from braidflow import AsyncBatchFlow, AsyncParallelBatchFlow, Node
from braidflow.tracing import Timeline


def sepia(image: Image.Image) -> Image.Image:
    return ImageOps.colorize(ImageOps.grayscale(image), black="#2e1a05", white="#f5e6c8")


FILTERS = {
    "blur": lambda image: image.filter(ImageFilter.GaussianBlur(radius=6)),
    "sharpen": lambda image: image.filter(ImageFilter.UnsharpMask(radius=4, percent=180)),
    "edges": lambda image: image.filter(ImageFilter.FIND_EDGES),
    "sepia": sepia,
}


def make_image(path: Path, size: int, seed: int) -> None:
    """A test picture: a gradient, some shapes and a little noise."""
    rng = random.Random(seed)
    width, height = size, size * 3 // 4
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.merge(
        "RGB",
        (gradient, gradient.rotate(90, expand=False), ImageOps.invert(gradient)),
    )
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x, y = rng.randrange(width), rng.randrange(height)
        radius = rng.randrange(size // 30, size // 6)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    Image.blend(image, noise, 0.15).save(path, compress_level=1)


# -- the flow for one (image, filter) pair -------------------------------------------------


class Load(Node):
    """Read the image named by this pair's params."""

    def prep(self, shared):
        return Path(shared["directory"]) / self.params["image"]

    def exec(self, path):
        with Image.open(path) as image:
            return image.convert("RGB")  # reads the pixels now, in this thread

    def post(self, shared, prep_result, exec_result):
        shared["image"] = exec_result


class Apply(Node):
    """Apply this pair's filter."""

    def prep(self, shared):
        return shared["image"]

    def exec(self, image):
        return FILTERS[self.params["filter"]](image)

    def post(self, shared, prep_result, exec_result):
        shared["filtered"] = exec_result


class Save(Node):
    """Save the result as PNG and note where it went."""

    def prep(self, shared):
        name = f"{Path(self.params['image']).stem}-{self.params['filter']}.png"
        return shared["filtered"], Path(shared["directory"]) / "out" / name

    def exec(self, inputs):
        image, path = inputs
        image.save(path, compress_level=1)  # fast PNG: the filters are the point here
        return path

    def post(self, shared, prep_result, exec_result):
        shared["outputs"][exec_result.name] = str(exec_result)
        del shared["image"], shared["filtered"]  # the pixels are not results


def pairs_flow(kind):
    """Load -> Apply -> Save for each (image, filter) pair, run by `kind`."""

    class EveryPair(kind):
        async def prep_async(self, shared):
            return [
                {"image": image, "filter": name}
                for image in shared["images"]
                for name in shared["filters"]
            ]

    # Sync nodes, offloaded: Pillow's C code runs in braidflow's threads.
    load, apply, save = Load(offload=True), Apply(offload=True), Save(offload=True)
    load >> apply >> save
    if kind is AsyncParallelBatchFlow:
        # Each pair on its own view of shared; their outputs merged as dicts.
        return EveryPair(
            start=load,
            max_concurrency=os.cpu_count() or 2,
            isolate=True,
            merge={"outputs": "update"},
            name="filters in parallel",
        )
    return EveryPair(start=load, name="filters one by one")


def run(kind, directory: Path, images: list[str], observers=()) -> tuple[float, dict]:
    (directory / "out").mkdir(exist_ok=True)
    shared = {
        "directory": str(directory),
        "images": images,
        "filters": list(FILTERS),
        "outputs": {},
    }
    started = time.perf_counter()
    asyncio.run(pairs_flow(kind).run_async(shared, observers=list(observers)))
    return time.perf_counter() - started, shared["outputs"]


@contextlib.contextmanager
def output_directory(out: Path | None) -> Iterator[Path]:
    """``out`` if given (kept), else a new temporary directory, removed at exit."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="braidflow-images-") as name:
        yield Path(name)


def filter_images(args: argparse.Namespace, directory: Path) -> int:
    images = []
    for number in range(args.images):
        name = f"picture{number + 1}.png"
        make_image(directory / name, args.size, seed=number)
        images.append(name)
    pairs = len(images) * len(FILTERS)
    print(f"{len(images)} images x {len(FILTERS)} filters = {pairs} pairs, in {directory}")

    one_by_one, _ = run(AsyncBatchFlow, directory, images)
    print(f"AsyncBatchFlow (one pair at a time):      {one_by_one:6.2f} s")

    observers = [Timeline(directory / "timeline.html")]
    if args.progress:
        from braidflow.tracing import Progress  # needs rich: braidflow[tracing]

        observers.append(Progress())
    in_parallel, outputs = run(AsyncParallelBatchFlow, directory, images, observers)
    cores = os.cpu_count() or 1
    print(f"AsyncParallelBatchFlow (up to {cores} at once): {in_parallel:6.2f} s")
    print(f"speedup: {one_by_one / in_parallel:.1f}x on {cores} cores")
    print(f"{len(outputs)} images written to {directory / 'out'}")
    print(f"timeline of the parallel run: {directory / 'timeline.html'}")
    return 0 if len(outputs) == pairs else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="how many images to make")
    parser.add_argument("--size", type=int, default=800, help="their width in pixels")
    parser.add_argument("--out", type=Path, help="where to write (default: removed at exit)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar (rich)")
    parser.add_argument("--fast", action="store_true", help="a small run, for tests")
    args = parser.parse_args()
    if args.fast:
        args.images, args.size = 2, 160
    with output_directory(args.out) as directory:
        status = filter_images(args, directory)
    if args.out is None:
        print(f"(removed {directory} at exit: --out DIR keeps the images and the timeline)")
    return status


if __name__ == "__main__":
    sys.exit(main())
