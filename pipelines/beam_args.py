"""Where each Beam step runs and where its workers get the project's code: the one rule for every runner.

Given no code source, TFX builds an sdist of its own source for every Beam step (3 s, and 52 MB in a new temporary
folder it never removes: a full /tmp after a few hundred runs) to stage to workers that have TFX already: the local
runner, and the project's image everywhere else. And remote workers must import the project: its components' DoFns
(the embedding stage) run there.
"""
from __future__ import annotations

# The Beam arguments that tell TFX where workers get their code (tfx/utils/dependency_utils.py).
TFX_DEPENDENCY_FLAGS = ("--extra_package", "--extra_packages", "--setup_file", "--requirements_file",
                        "--sdk_container_image", "--worker_harness_container_image")
# Beam runners that run the pipeline inside the step's own process (or pod).
IN_PROCESS_RUNNERS = {"directrunner", "bundlebaseddirectrunner", "switchingdirectrunner", "fnapirunner"}


def beam_runner(beam_args: list[str]) -> str | None:
    """The runner Beam will use: the last `--runner` given (as Beam's own argparse reads it), or None."""
    runner = None
    for i, arg in enumerate(beam_args):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(beam_args):
            runner = beam_args[i + 1]
    return runner


def runs_on_a_cluster(beam_args: list[str]) -> bool:
    runner = beam_runner(beam_args)
    return runner is not None and runner.lower() not in IN_PROCESS_RUNNERS


def _given(beam_args: list[str], *flags: str) -> bool:
    return any(arg.split("=", 1)[0] in flags for arg in beam_args)


def with_cluster_workers_image(beam_args: list[str], image: str) -> list[str]:
    """Makes a distributed runner's workers run `image`: DataflowRunner `--sdk_container_image=IMAGE` (the TFX image is
    built on Beam's SDK image, so ours is a valid worker image), Flink/Spark/portable runners
    `--environment_type=DOCKER --environment_config=IMAGE`. Arguments the user gave win; in-process runners get
    nothing."""
    args = list(beam_args)
    if not runs_on_a_cluster(args):
        return args
    if beam_runner(args).lower() == "dataflowrunner":
        if not _given(args, "--sdk_container_image", "--worker_harness_container_image"):
            args.append(f"--sdk_container_image={image}")
    elif not _given(args, "--environment_type"):
        args += ["--environment_type=DOCKER", f"--environment_config={image}"]
    return args


def with_worker_code_source(beam_args: list[str], image: str) -> list[str]:
    """`beam_args` naming `image` as the workers' code source, unless they already say where workers get their code
    (the user's arguments win)."""
    if _given(beam_args, *TFX_DEPENDENCY_FLAGS):
        return list(beam_args)
    return [f"--sdk_container_image={image}", *beam_args]
