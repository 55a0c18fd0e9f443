from tests.service.conftest import offline  # noqa: F401  (the offline reference run, as a fixture here too)
