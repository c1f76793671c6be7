from tests.envs.conftest import tiny_requests, tiny_sampler  # noqa: F401  (shared fixtures)
