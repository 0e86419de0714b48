"""The library on a GPU: every method keeps the same channels with `device='cuda'` as on the CPU (or, where float order
legitimately differs, scores agree within a stated tolerance); surgery, latency and save/load on CUDA.
Every test here is marked `cuda` and skips, saying so, on a machine without CUDA (see tests/conftest.py)."""
import copy
import pytest, torch
from prunebook.cli import demo_model
from prunebook.compare import layer_widths
from prunebook.core import measure_latency
from prunebook.data import preload, synthetic, TensorLoader
from prunebook.dfpc import dfpc_prune, dfpc_scores
from prunebook.graph import channel_groups
from prunebook.models import cifar_resnet
from prunebook.pfp import pfp_prune
from prunebook.sap import structured_drop
from prunebook.surgery import load_pruned, mask_channels, prune_uniform, remove_channels, save_pruned
from prunebook.tpp import tpp_prune
from prunebook.tvs import itertvsprune, tvsprune

pytestmark = pytest.mark.cuda
SCORE_RTOL = 1e-3   # scores summed in another order on the GPU: relative agreement asked of them

@pytest.fixture(scope='module')
def net():
    "A trained network (the demo's ResNet-20 on synthetic shapes) and 200 calibration images: no download needed."
    return demo_model(), preload(synthetic('train', 20, seed=2))

def on(device, model): return copy.deepcopy(model).to(device).eval()

def same_widths(prune, model):
    "The pruned network's layer widths when `prune(model, device)` runs on the CPU and on CUDA."
    cpu, gpu = prune(on('cpu', model), 'cpu'), prune(on('cuda', model), 'cuda')
    assert layer_widths(gpu) == layer_widths(cpu)
    return cpu, gpu

def test_l1_and_random(net):
    m, (x, _) = net
    for score in ('l1', 'random'):
        same_widths(lambda mm, d: prune_uniform(mm, x[:1].to(d), 0.3, score, seed=0), m)

def test_tvsprune(net):
    m, data = net
    same_widths(lambda mm, d: tvsprune(mm, data, n_per_class=None, sparsity=0.3, device=d)[0], m)

def test_itertvsprune(net):
    m, data = net
    same_widths(lambda mm, d: itertvsprune(mm, data, n_per_class=None, sparsity=0.3, device=d)[0], m)

def test_dfpc(net):
    m, (x, _) = net
    groups = channel_groups(m, x[:1])
    a, b = dfpc_scores(m, x[:1], groups, device='cpu'), dfpc_scores(m, x[:1], groups, device='cuda')
    for g in a: torch.testing.assert_close(b[g].cpu(), a[g], rtol=SCORE_RTOL, atol=0)
    same_widths(lambda mm, d: dfpc_prune(mm, x[:1].to(d), target=0.6, allocation='normalized'), m)

def test_pfp(net):
    m, data = net
    same_widths(lambda mm, d: pfp_prune(mm, [data], prune_ratio=0.3, n_points=len(data[1]), device=d), m)

def test_sap_structured(net):
    m, (x, _) = net
    drops = [structured_drop(on(d, m), channel_groups(on(d, m), x[:1].to(d)))[0] for d in ('cpu', 'cuda')]
    assert {k: sorted(map(int, v)) for k, v in drops[0].items()} == {k: sorted(map(int, v)) for k, v in drops[1].items()}

def test_tpp(net):
    "TPP chooses its channels by L1 before training: the same ones on both devices; its few training steps run on CUDA."
    m, data = net
    loader = TensorLoader(*data, 50, shuffle=True, seed=0)
    same_widths(lambda mm, d: tpp_prune(mm, loader, 0.3, example_inputs=data[0][:1], ramp_iters=20, stabilize_iters=5,
                                        zero_out_every=1, ft_epochs=0, progress=False, device=d), m)

def test_surgery_equals_masking_on_cuda(net):
    m, (x, _) = net
    gm, xg = on('cuda', m), x[:16].cuda()
    groups = channel_groups(gm, xg[:1])
    drop = {g: torch.arange(0, len(g), 3) for g in groups if g.prunable}
    with torch.no_grad(): a, b = remove_channels(gm, groups, drop)(xg), mask_channels(gm, groups, drop)(xg)
    assert a.device.type == 'cuda'
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

def test_measure_latency_on_cuda(net):
    m, (x, _) = net
    t = measure_latency(m, x[:32], 'cuda', warmup=2, iters=5)
    assert t > 0 and next(m.parameters()).device.type == 'cpu'   # measured there (synchronized), given back where it was

def test_saved_on_gpu_loads_on_cpu(net, tmp_path):
    m, (x, _) = net
    pruned = prune_uniform(on('cuda', m), x[:1].cuda(), 0.5, 'l1')
    save_pruned(pruned, tmp_path / 'p.pt')
    back = load_pruned(tmp_path / 'p.pt', lambda: cifar_resnet(20), map_location='cpu')
    with torch.no_grad(): torch.testing.assert_close(back(x[:8]), pruned(x[:8].cuda()).cpu(), rtol=1e-4, atol=1e-4)
