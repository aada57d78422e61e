"""What the second-stage models (CITIES, MELT) share about their SASRec backbone."""

from torch.func import functional_call


def forward_with_item_table(model, item_table, item_seq, item_seq_len):
    """``model``'s own forward (SASRec's for CITIES and MELT) with ``item_table``
    [n_items H] in place of ``model.item_embedding.weight``, for the history lookup
    and anything else the forward reads from that table -> [B H].

    The lookup stays the ``nn.Embedding``'s (``padding_idx=0``: no gradient reaches
    row 0 through it); gradients flow into ``item_table`` as into the weight.
    """
    return functional_call(model, {"item_embedding.weight": item_table}, (item_seq, item_seq_len))
