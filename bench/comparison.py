"""Every method side by side (prunebook.compare): ResNet-20 and ResNet-56 on CIFAR-10 (JPEG-75), LeNet-5 on MNIST, at
matched MACs, with and without a fixed one-epoch fine-tune. Same as `prunebook bench [--quick]`.

Run: flock /tmp/prunebook-cpu.lock python bench/comparison.py [--quick]
Writes bench/results/comparison[-quick].{json,md,png}."""
import sys
from pathlib import Path
from prunebook.cli import main

if __name__ == '__main__':
    sys.exit(main(['bench', '--out', str(Path(__file__).parent / 'results'), *sys.argv[1:]]))
