"""Train the VGG-16-BN base model for the TVSPrune benchmark's VGG rows on exact CIFAR-10 (a GPU job).

Data: `cifar10('train')` (45,000 images) with random crops + flips; held-out accuracy on `cifar10('val')` every 5 epochs.
SGD, momentum 0.9, lr 0.05 with cosine decay, weight decay 5e-4, batch 128, EPOCHS epochs, on the GPU when there is one
(about an hour of a 2-core CPU per epoch: do not run it on the CPU). Checkpoints after every epoch (resumable); the
final weights go to `cache_dir()/'trained'/VGG16_FILE`, which `load_vgg16()` reads; the training record to
`<out>/tvs_vgg16.json`. `--smoke`: VGG-11 for one epoch on 100 synthetic images, everything in a temporary folder.
Run: python bench/tvs_vgg16.py [--out DIR] [--smoke]"""
from __future__ import annotations
import json, math, sys, time
from pathlib import Path
import torch, torch.nn.functional as F
sys.path.insert(0, str(Path(__file__).parent))
from common import bench_args, results_dir
from prunebook.core import evaluate, default_device
from prunebook.data import cifar10, cifar_transform, dataloader, cache_dir, synthetic
from prunebook.models import vgg_cifar

EPOCHS, LR, BS, WD, SEED = 30, 0.05, 128, 5e-4, 0
VGG16_FILE = f'vgg16bn-cifar10-train45k-e{EPOCHS}-lr{LR:g}-bs{BS}-s{SEED}.pt'

def load_vgg16():
    "The trained VGG-16-BN (CPU, eval mode) and its training record."
    f = cache_dir()/'trained'/VGG16_FILE
    m = vgg_cifar(16); m.load_state_dict(torch.load(f, map_location='cpu', weights_only=True))
    rec = json.loads(f.with_suffix('.json').read_text()) if f.with_suffix('.json').exists() else {}
    return m.eval(), rec

def main():
    args = bench_args(__doc__).parse_args()
    res_dir = results_dir(args)
    epochs, depth = (1, 11) if args.smoke else (EPOCHS, 16)
    out = (res_dir if args.smoke else cache_dir()/'trained')/VGG16_FILE
    if out.exists(): print('already trained:', out); return
    ck = out.with_name(out.name + '.ckpt')
    torch.manual_seed(SEED)
    if args.smoke: fit, held = synthetic('train', 10, transform=cifar_transform(train=True)), synthetic('test', 5)
    else: fit, held = cifar10('train', transform=cifar_transform(train=True)), cifar10('val')
    dev = default_device(None)
    model = vgg_cifar(depth).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=WD)
    total, start_epoch, log = epochs * len(dataloader(fit, BS)), 0, []
    if ck.exists():
        s = torch.load(ck, weights_only=False, map_location=dev)
        model.load_state_dict(s['model']); opt.load_state_dict(s['opt']); start_epoch, log = s['epoch'], s['log']
        print('resumed at epoch', start_epoch)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        model.train(); seen = tot = 0
        loader = dataloader(fit, BS, shuffle=True, seed=SEED + epoch, num_workers=0 if args.smoke else 4)
        for i, (x, y) in enumerate(loader):
            step = epoch * len(loader) + i
            for g in opt.param_groups: g['lr'] = LR * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(x.to(dev)), y.to(dev))
            opt.zero_grad(); loss.backward(); opt.step()
            tot += loss.item() * len(y); seen += len(y)
        acc = evaluate(model, dataloader(held, 500), dev) if (epoch + 1) % 5 == 0 or epoch + 1 == epochs else None
        log.append(dict(epoch=epoch + 1, loss=tot / seen, heldout_acc=acc, seconds=time.perf_counter() - t0))
        print(log[-1], flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), epoch=epoch + 1, log=log), ck)
    torch.save(model.cpu().state_dict(), out)
    record = dict(epochs=epochs, lr=LR, batch_size=BS, weight_decay=WD, seed=SEED, train_images=len(fit), device=str(dev),
                  log=log, seconds_this_run=time.perf_counter() - t0)
    out.with_suffix('.json').write_text(json.dumps(record, indent=1))
    (res_dir/'tvs_vgg16.json').write_text(json.dumps(record, indent=1))
    print('saved', out)

if __name__ == '__main__': main()
