"The `prunebook` command as a new user meets it: help, wrong arguments (one line, exit code 2), the entry point."
import subprocess, sys
import pytest

def run(*args):
    return subprocess.run([sys.executable, '-c', 'import sys; from prunebook.cli import main; sys.exit(main())', *args],
                          capture_output=True, text=True, timeout=300)

def test_help_lists_commands():
    r = run('--help')
    assert r.returncode == 0
    for cmd in ('demo', 'prune', 'bench'): assert cmd in r.stdout

@pytest.mark.parametrize('args,expect', [
    (['prune', '--method', 'magic', '--model', 'resnet20', '--data', 'synthetic', '--target-macs', '0.5'], "--method: 'magic' is not one of"),
    (['prune', '--method', 'dfpc:sideways', '--model', 'resnet20', '--data', 'synthetic', '--target-macs', '0.5'], "--method: 'dfpc:sideways' is not one of"),
    (['prune', '--method', 'l1', '--model', 'resnet20', '--data', 'imagenet', '--target-macs', '0.5'], "argument --data: invalid choice: 'imagenet'"),
    (['prune', '--method', 'l1', '--model', 'resnet20', '--data', 'synthetic', '--target-macs', '1.5'], '--target-macs: 1.5 must lie in (0, 1)'),
    (['prune', '--method', 'l1', '--model', 'resnet20', '--data', 'synthetic', '--target-macs', 'half'], "argument --target-macs: invalid float value: 'half'"),
    (['prune', '--method', 'l1', '--model', 'lenet5', '--data', 'cifar10', '--target-macs', '0.5'], 'lenet5 needs mnist'),
    (['prune', '--method', 'l1', '--model', 'no/such/model.pt', '--data', 'synthetic', '--target-macs', '0.5'], "--model: 'no/such/model.pt' is neither a file nor one of"),
    (['prune', '--method', 'l1', '--model', 'resnet20', '--data', 'synthetic', '--target-macs', '0.5', '--finetune-iters', '-1'], '--finetune-iters: -1 must be 0 or more'),
    (['bench', '--targets', '0'], '--targets: must lie in (0, 1)'),
    (['bench', '--methods', 'magic'], "--methods: 'magic' is not one of"),
    (['bench', '--tasks', 'resnet18'], "argument --tasks: invalid choice: 'resnet18'"),
    (['demo', '--amounts', '1.2'], '--amounts: must lie in [0, 1)'),
    (['demo', '--finetune-iters', '-3'], '--finetune-iters: -3 must be 0 or more'),
    (['frobnicate'], "invalid choice: 'frobnicate'"),
])
def test_wrong_arguments(args, expect):
    r = run(*args)
    assert r.returncode == 2, r
    last = r.stderr.strip().splitlines()[-1]
    assert expect in last, r.stderr

def test_missing_data_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv('PRUNEBOOK_DATA', str(tmp_path)); monkeypatch.setenv('PRUNEBOOK_CACHE', str(tmp_path / 'cache'))
    r = run('prune', '--method', 'l1', '--model', 'lenet5', '--data', 'mnist', '--target-macs', '0.5', '--out', str(tmp_path / 'x.pt'))
    assert r.returncode == 2, r
    assert 'mnist' in r.stderr.lower() and 'Traceback' not in r.stderr

def test_missing_cifar_is_explained(tmp_path, monkeypatch):
    "CIFAR-10 absent: one line naming the data, where it goes and how to download it (no traceback, no download)."
    monkeypatch.setenv('PRUNEBOOK_DATA', str(tmp_path)); monkeypatch.setenv('PRUNEBOOK_CACHE', str(tmp_path / 'cache'))
    r = run('prune', '--method', 'l1', '--model', 'resnet20', '--data', 'cifar10', '--target-macs', '0.5', '--out', str(tmp_path / 'x.pt'))
    assert r.returncode == 2, r
    assert 'CIFAR-10' in r.stderr and 'PRUNEBOOK_DATA' in r.stderr and 'Traceback' not in r.stderr
