"""The suite's MLflow store survives a test that resets MLflow's tracking URI.

`mlflow.set_tracking_uri(None)` unsets MLFLOW_TRACKING_URI as well; without the root conftest's
`session_tracking_store`, the second test below would find MLflow on its default store (a
`mlflow.db` in the working folder), where every later stage test would then log."""
import os

import mlflow

from tests.conftest import SESSION_TRACKING_URI


def test_a_test_may_point_mlflow_elsewhere_and_reset_it(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(None)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # what MLflow does; the fixture mends it


def test_the_next_test_logs_to_the_session_store_again():
    assert os.environ["MLFLOW_TRACKING_URI"] == SESSION_TRACKING_URI
    assert mlflow.get_tracking_uri() == SESSION_TRACKING_URI
