"""The fixtures shared by every app's tests live in the `testing` package (testing/fixtures.py,
a pytest plugin registered here), with the helpers the tests import: testing.processes (child
`manage.py` commands and their logs), testing.database, testing.broker (per-test topics),
testing.clients and testing.devservers (the throwaway PostgreSQL server, free ports). No app
imports `testing`."""

pytest_plugins = ["testing.fixtures"]
