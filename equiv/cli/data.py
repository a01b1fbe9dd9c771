"""``equiv data``: find, verify (and with ``--download`` fetch) Fashion-MNIST."""
import sys


def add_parser(sub):
    p = sub.add_parser("data", help="find, verify (and with --download fetch) Fashion-MNIST",
                       description="Looks for the Fashion-MNIST IDX files in --data-dir, $EQUIV_DATA_DIR, "
                                   "/usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist) "
                                   "and ~/.cache/bn-equiv/fashion-mnist, then checks magic numbers, shapes and "
                                   "SHA-256 checksums.")
    p.add_argument("--data-dir", default=None, help="folder with the four IDX files (.gz or raw)")
    p.add_argument("--download", action="store_true",
                   help="download what is missing (into --data-dir when given, else the user cache); "
                        "the files come over plain http and are checked against their SHA-256 sums")
    p.set_defaults(fn=run)


def run(args):
    from equiv.data import DataError, find_data_dir, load_fashion_mnist
    try:
        d = load_fashion_mnist(args.data_dir, download=args.download)
        where = find_data_dir(args.data_dir)
    except DataError as e:
        print(f"equiv: error: {e}", file=sys.stderr)
        return 2
    counts = " ".join(str(int((d["train_y"] == k).sum())) for k in range(10))
    print(f"Fashion-MNIST in {where}: train {d['train_x'].shape}, test {d['test_x'].shape}, "
          f"checksums verified; train images per class: {counts}")
    return 0
