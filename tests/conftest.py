"pytest options shared by the tests: `--runslow` runs the checks marked `slow`; `cuda` checks skip without a GPU."
import pytest, torch

def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False, help='also run the tests marked slow (minutes)')

def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason='slow: run with --runslow')
    skip_cuda = pytest.mark.skip(reason='needs CUDA: no CUDA device on this machine')
    for item in items:
        if 'slow' in item.keywords and not config.getoption('--runslow'): item.add_marker(skip_slow)
        if 'cuda' in item.keywords and not torch.cuda.is_available(): item.add_marker(skip_cuda)
