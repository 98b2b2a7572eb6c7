"""Trains a tiny torch classifier on kiln batches: the README's Python quick start.

    python python/examples/train_tiny.py out/demo/audio [--epochs 8]

The directory holds one folder per class (`bash scripts/example` synthesises one in
out/demo/audio). kiln converts it once to cached one-second log-mel tensors
(examples/log_mel.json with `fix_length`; a second run is a cache hit), then streams
shuffled batches into torch.
"""
import argparse
import json
from pathlib import Path

import torch

import kiln
import kiln.torch

SPEC = Path(__file__).resolve().parents[2] / "examples" / "log_mel.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="a directory with one folder of audio files per class")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--cache", default=None, help="cache directory (default: kiln's)")
    args = parser.parse_args()

    spec = json.loads(SPEC.read_text())
    # Every clip cut or padded to one second, so batches stack to (B, 80, 101).
    spec["ops"].insert(1, {"op": "fix_length", "size": 16000})
    entry = kiln.convert(args.data, spec, cache_dir=args.cache, progress=False)
    print(f"{entry.rows} clips, classes {entry.label_names}, tensor {entry.tensor_dtype} {entry.tensor_shape}"
          f"{' (cache hit)' if entry.cache_hit else ''}")
    n_mels = entry.tensor_shape[0]
    torch.manual_seed(0)
    # Mean log-mel over time, then a linear layer: enough to separate the demo's tones.
    model = torch.nn.Sequential(torch.nn.LayerNorm(n_mels), torch.nn.Linear(n_mels, len(entry.label_names)))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    with kiln.torch.make_torch_dataloader(entry, batch_size=8, num_epochs=args.epochs, seed=0) as loader:
        seen = correct = 0
        epoch_loss = 0.0
        epoch = 0
        for batch in loader:
            if batch["epoch"] != epoch:
                print(f"epoch {epoch}: loss {epoch_loss / max(seen, 1):.3f}, accuracy {correct / max(seen, 1):.2f}")
                epoch, seen, correct, epoch_loss = batch["epoch"], 0, 0, 0.0
            features = batch["tensor"].mean(dim=-1)  # (B, n_mels)
            labels = batch["label_index"].long()
            logits = model(features)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(labels)
            correct += int((logits.argmax(dim=1) == labels).sum())
            epoch_loss += loss.item() * len(labels)
        print(f"epoch {epoch}: loss {epoch_loss / max(seen, 1):.3f}, accuracy {correct / max(seen, 1):.2f}")


if __name__ == "__main__":
    main()
