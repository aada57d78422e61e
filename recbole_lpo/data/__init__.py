from recbole_lpo.data.head_tail import HeadTailSplit, head_tail_split

__all__ = ["HeadTailSplit", "head_tail_split"]
