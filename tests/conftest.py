from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

# This project's CI (scripts/test.sh: --hypothesis-profile=ci) runs Hypothesis's derandomized ci profile with
# fewer examples, to stay well inside its time budget; `--hypothesis-profile=thorough` is the deep run.
settings.register_profile(
    "ci",
    parent=settings.get_profile("ci"),
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
