import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
SHARED = os.path.abspath(os.environ.get('NATSR_SHARED', os.path.join(ROOT, '..', 'shared')))

import pytest  # noqa: E402


def shared_path(*parts):
    """Path under ../shared, or skip the test with a clear reason when it is absent."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip('reference data not found: %s (../shared beside the checkout)' % path)
    return path
