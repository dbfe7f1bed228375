"""``dgml-viz search``: nearest neighbours of a query image in an index (FAISS), on any subset of groups.

    dgml-viz search --index runs/test_index --query photo.jpg --topk 5 --json
    dgml-viz search --index runs/test_index --query photo.jpg --groups 0,2

The query is embedded with the index's checkpoint (the path recorded in the index,
or --ckpt; its sha256 must match the index's). With --groups S the similarity is
the mean cosine of the groups in S (the inner product of the S slices concatenated
and renormalised); S defaults to all groups (the model's own embedding).

--json prints one JSON object:

  {"query": PATH,                       the query image as given
   "groups": [g, ...],                  the groups searched on
   "neighbours": [                      best first, at most --topk
     {"path": PATH,                     an indexed image
      "similarity": s,                  mean over "groups" of the group cosines, in [-1, 1]
      "group_similarity": [s_0, ...]}   cosine <f_g(query), f_g(neighbour)> of every group g = 0..K-1
   ]}

Without --json a plain table is printed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "nearest neighbours of an image in an index (FAISS; group subsets)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dgml_viz.index.search import METHODS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--index", required=True, help="index folder (from `dgml-viz index`)")
    parser.add_argument("--query", required=True, help="query image file")
    parser.add_argument("--groups", default=None, help="comma-separated groups to search on, e.g. 0,2 (default all)")
    parser.add_argument("--topk", type=int, default=10, help="neighbours to return (default 10)")
    parser.add_argument("--method", choices=METHODS, default="flat",
                        help="flat = exact inner product (default); hnsw / ivf = approximate, for millions")
    parser.add_argument("--ckpt", default=None, help="the index's checkpoint, if it moved (sha256 checked)")
    parser.add_argument("--exclude-self", action="store_true", help="leave the query's own row out if indexed")
    parser.add_argument("--device", default="cpu", help="torch device for embedding the query (default cpu)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (schema above)")


def run(args: argparse.Namespace) -> int:
    from dgml_viz.validation import parse_groups
    from dgml_viz.errors import ConfigError, ImageError
    from dgml_viz.index.search import Searcher, embed_paths, load_index_model, neighbours_json
    from dgml_viz.index.store import open_index

    if args.topk < 1:
        raise ConfigError(f"--topk must be >= 1, got {args.topk}")
    query = Path(args.query)
    if not query.is_file():
        raise ImageError(f"{query}: no such image file")
    index = open_index(args.index)
    groups = parse_groups(args.groups, index.num_groups)
    model = load_index_model(index, args.ckpt, args.device)
    q = embed_paths(model, [query])
    own = index.position(query) if args.exclude_self else None
    result = Searcher(index, args.method).search(q, k=args.topk, groups=groups,
                                                 exclude=[[own]] if own is not None else None)
    doc = neighbours_json(str(args.query), result, index)
    if args.json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return 0
    sys.stdout.write(f"query {doc['query']}  groups {doc['groups']}\n")
    for r, hit in enumerate(doc["neighbours"], 1):
        per = " ".join(f"{v:+.3f}" for v in hit["group_similarity"])
        sys.stdout.write(f"{r:3d}  {hit['similarity']:+.4f}  [{per}]  {hit['path']}\n")
    return 0
