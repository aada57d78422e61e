"""Train and evaluate a model with the recbole_lpo plugin (RecBole's run script, plugin-aware).

    python run_recbole_lpo.py --model=LPO4Rec --dataset=amazon-beauty
    python run_recbole_lpo.py -m SASRec -d amazon-beauty --epochs=5 --lpo_lambda=0.3
    python run_recbole_lpo.py -m LPO4Rec -d amazon-beauty --resume saved/LPO4Rec-<run id>.pth

Exit status: 0 done, 2 bad input (one ``error:`` line), 3 training diverged (NaN/inf loss).

Any other ``--key=value`` is a RecBole/plugin config override.
"""

import argparse
import sys

from recbole_lpo.errors import run_cli
from recbole_lpo.quick_start import run
from recbole_lpo.runtime import keep_freed_memory


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", "-m", type=str, default="LPO4Rec", help="model name (plugin or RecBole)")
    parser.add_argument("--dataset", "-d", type=str, default="amazon-beauty", help="data set name")
    parser.add_argument("--config_files", type=str, default=None, help="config files, space separated")
    parser.add_argument("--nproc", type=int, default=1, help="number of processes (DDP)")
    parser.add_argument("--ip", type=str, default="localhost", help="master address (DDP)")
    parser.add_argument("--port", type=str, default="5678", help="master port (DDP)")
    parser.add_argument("--world_size", type=int, default=-1, help="total processes over all nodes (DDP)")
    parser.add_argument("--group_offset", type=int, default=0, help="rank offset of this node (DDP)")
    parser.add_argument("--no_save", action="store_true", help="do not save the best checkpoint")
    parser.add_argument("--resume", type=str, default=None,
                        help="continue an interrupted run from its checkpoint (same model, data and settings; epochs may change) into a new checkpoint")
    args, overrides = parser.parse_known_args(argv)
    config_file_list = args.config_files.strip().split(" ") if args.config_files else None

    def train():
        keep_freed_memory()  # faster CPU steps, same results (recbole_lpo/runtime.py)

        run(args.model, args.dataset, config_file_list=config_file_list, saved=not args.no_save,
            nproc=args.nproc, world_size=args.world_size, ip=args.ip, port=args.port,
            group_offset=args.group_offset, resume=args.resume, cmd_args=overrides)

    return run_cli(train)


if __name__ == "__main__":
    sys.exit(main())
