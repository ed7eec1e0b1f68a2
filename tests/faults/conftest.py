import pytest

from rlhf.paths import Paths
from tests.worlds import rl_world


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Paths:
    """Demonstrations, pairs, RL prompts, a tokenizer, an SFT policy and a reward model: every
    stage's inputs. Tests train in copies (`tests.faults.projects.fresh`), never here."""
    return rl_world(tmp_path_factory.mktemp("world"))
