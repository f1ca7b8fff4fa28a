"""What the notebooks do at their edge, in one call, for tests that start from a profile's name."""

from tldr_utils import config, experiments, targets


def method_run(
    profile: str, method: str, dataset: str, overrides: dict | None = None, **kwargs
) -> dict:
    """``experiments.run`` with ``method``'s settings, the targets' recipe and the run folder of
    ``profile``."""
    return experiments.run(
        method,
        dataset,
        config.settings(profile, method, overrides),
        config.settings(profile, "train_targets"),
        config.run_dir(profile),
        **kwargs,
    )


def target(
    profile: str, dataset: str, arch: str, train_size=None, seed: int = 0, trained: bool = True
):
    """``(net, meta)`` of the target that ``profile`` trains for these choices."""
    recipe = config.settings(profile, "train_targets")
    return targets.get(
        config.run_dir(profile), targets.spec(recipe, dataset, arch, train_size, seed, trained)
    )


def judge(profile: str, dataset: str, target_arch: str):
    """``(net, meta)`` of the independent judge that ``profile`` trains for targets of
    ``target_arch``."""
    recipe = config.settings(profile, "train_targets")
    return targets.get(
        config.run_dir(profile), targets.evaluator_spec(recipe, dataset, target_arch)
    )
