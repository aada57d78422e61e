"""Print the top-k items for users of a trained checkpoint.

    python -m recbole_lpo.recommend --checkpoint saved/LPO4Rec-<run id>.pth --user u1 --user u2 -k 10
    python -m recbole_lpo.recommend --checkpoint saved/SASRec-<run id>.pth --user u1 --exclude-history

One line per user on stdout: ``USER<TAB>item1 item2 ...`` (item tokens, best
first). Sequential models recommend the item after each user's last known
interaction (their whole history, last item included). Bad input (unknown
user, missing or unreadable checkpoint) prints one ``error:`` line on stderr
and exits with status 2.

The checkpoint is unpickled in full: use only checkpoints you trust.
"""

import argparse
import sys
import warnings

from recbole_lpo.errors import run_cli
from recbole_lpo.inference import load_data_and_model, recommend


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_lpo.recommend",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a .pth checkpoint written by run_recbole_lpo.py")
    parser.add_argument("--user", action="append", required=True, metavar="TOKEN",
                        help="a user token of the atomic files; repeat for several users (one line each)")
    parser.add_argument("-k", "--topk", type=int, default=10, dest="k", help="items per user (default 10)")
    parser.add_argument("--exclude-history", action="store_true",
                        help="never recommend an item the user has already interacted with "
                             "(anywhere in the data set); by default seen items may come back")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # RecBole 1.2.1's pandas FutureWarnings say nothing to someone asking for items
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole(\.|$)")

    def print_recommendations():
        _, model, dataset, *_ = load_data_and_model(args.checkpoint)
        top = recommend(model, dataset, args.user, k=args.k, exclude_history=args.exclude_history)
        for user, items in top.items():
            print(f"{user}\t{' '.join(items)}")

    return run_cli(print_recommendations)


if __name__ == "__main__":
    sys.exit(main())
