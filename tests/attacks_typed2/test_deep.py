"""Values nested as deep as MessagePack carries (1,024 levels, the message's own included)
through self-referential structs, by `?`, by `list<...>` and by `map<...>`, both ways,
through both generated clients, the untyped client and stream items: accepted up to the
limit, refused past it with an error (never a RecursionError, a crash or a hang), and the
server keeps serving. Handlers and helpers here walk values iteratively, so any
RecursionError would be the library's."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served

from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import MPRPCError, ParamError

IDL = """
struct Node { v: int; next: Node?; }
struct Tree { v: int; kids: list<Tree> = []; }
struct MTree { v: int; kids: map<str, MTree> = {}; }
struct Link { next: Link?; tags: map<str, int> = {}; }
service Deep {
    def node_depth(n: Node) -> int;
    def tree_depth(t: Tree) -> int;
    def mtree_depth(t: MTree) -> int;
    def echo_node(n: Node) -> Node;
    def echo_tree(t: Tree) -> Tree;
    def make(kind: str, depth: int, bad: bool = false) -> any;
    def make_node(depth: int, bad: bool = false) -> Node;
    def make_tree(depth: int) -> Tree;
    def make_mtree(depth: int) -> MTree;
    stream nodes(depth: int) -> Node;
    def nested(v: list<any>) -> int;
    def link_depth(link: Link) -> int;
    def make_link(depth: int) -> Link;
    def ok() -> int;
}
"""
# Levels the envelope takes: a request is {..., ARGS: [arg]} (2), a reply {..., RESULT: r}
# (1); the limit is 1024 in all, so an argument may nest 1022 levels and a result 1023
# (docs/protocol.md says 1022 for a result: the checks below only rely on 1022).
ARG_NODES = 1022  # Node: one map per level
ARG_TREES = 511  # Tree / MTree: a map and a list (or map) per level
RESULT_NODES = 1022


def node_of(mod: Any, depth: int, bad: bool = False) -> Any:
    n = None
    for i in range(depth):
        n = mod.Node(v="bad" if bad and n is None else i, next=n)
    return n


def chain(depth: int, bad: bool = False) -> Any:
    n: Any = None
    for i in range(depth):
        n = {"v": "bad" if bad and n is None else i, "next": n}
    return n


def tree_of(mod: Any, cls: Any, depth: int) -> Any:
    t = cls(v=0)
    for i in range(1, depth):
        t = cls(v=i, kids=[t] if cls is mod.Tree else {f"k{i}": t})
    return t


def wire_tree(depth: int, as_map: bool) -> Any:
    t: Any = {"v": 0, "kids": {} if as_map else []}
    for i in range(1, depth):
        t = {"v": i, "kids": {f"k{i}": t} if as_map else [t]}
    return t


def depth_of(v: Any) -> int:
    """Levels of a Node / Tree / MTree (dataclass or map), iteratively."""
    d = 0
    while v is not None:
        d += 1
        nxt = v["next"] if isinstance(v, dict) and "next" in v else getattr(v, "next", None)
        kids = v.get("kids") if isinstance(v, dict) else getattr(v, "kids", None)
        if kids:
            nxt = kids[0] if isinstance(kids, list) else next(iter(kids.values()))
        v = nxt
    return d


def link_of(mod: Any, depth: int) -> Any:
    """A chain of Links: the last one's `tags` is an empty map, one level further down."""
    n = None
    for _ in range(depth):
        n = mod.Link(next=n)
    return n


def nested_list(depth: int) -> list[Any]:
    v: list[Any] = []
    for _ in range(depth - 1):
        v = [v]
    return v


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with package(IDL, "deep_attack2", tmp_path_factory.mktemp("deep")) as mod:

        def make(self: Any, kind: str, depth: int, bad: bool = False) -> Any:
            if kind == "loop":
                loop: list[Any] = []
                loop.append(loop)
                return loop
            return chain(depth, bad) if kind == "chain" else nested_list(depth)

        def make_node(self: Any, depth: int, bad: bool = False) -> Any:
            if depth < 0:  # a Node that contains itself
                loop = mod.Node(v=1, next=None)
                object.__setattr__(loop, "next", loop)
                return loop
            return node_of(mod, depth, bad)

        async def nodes(self: Any, depth: int) -> AsyncIterator[Any]:
            yield node_of(mod, 1)
            yield node_of(mod, depth)

        def nested(self: Any, v: Any) -> int:
            d = 1
            while v and isinstance(v[0], list):
                d, v = d + 1, v[0]
            return d

        methods = {
            "node_depth": lambda self, n: depth_of(n),
            "tree_depth": lambda self, t: depth_of(t),
            "mtree_depth": lambda self, t: depth_of(t),
            "echo_node": lambda self, n: n,
            "echo_tree": lambda self, t: t,
            "make": make,
            "make_node": make_node,
            "make_tree": lambda self, depth: tree_of(mod, mod.Tree, depth),
            "make_mtree": lambda self, depth: tree_of(mod, mod.MTree, depth),
            "nodes": nodes,
            "nested": nested,
            "link_depth": lambda self, link: depth_of(link),
            "make_link": lambda self, depth: link_of(mod, depth),
            "ok": lambda self: 41,
        }
        server = new_server()
        mod.register_deep(server, type("D", (mod.DeepServicer,), methods)())
        with served(server) as running:
            yield mod, running.url


def test_self_referential_structs_at_the_limit_go_both_ways(deep: tuple[Any, str]) -> None:
    mod, url = deep
    with mod.DeepClient(url) as client, RPC(url) as rpc:
        assert client.node_depth(node_of(mod, ARG_NODES)) == ARG_NODES
        assert rpc.node_depth(chain(ARG_NODES)) == ARG_NODES
        assert depth_of(client.echo_node(node_of(mod, ARG_NODES))) == ARG_NODES
        assert depth_of(client.make_node(RESULT_NODES)) == RESULT_NODES
        assert depth_of(rpc.make_node(RESULT_NODES)) == RESULT_NODES
        assert client.tree_depth(tree_of(mod, mod.Tree, ARG_TREES)) == ARG_TREES
        assert client.mtree_depth(tree_of(mod, mod.MTree, ARG_TREES)) == ARG_TREES
        assert rpc.tree_depth(wire_tree(ARG_TREES, as_map=False)) == ARG_TREES
        assert rpc.mtree_depth(wire_tree(ARG_TREES, as_map=True)) == ARG_TREES
        got = client.echo_tree(tree_of(mod, mod.Tree, ARG_TREES))
        assert type(got) is mod.Tree and depth_of(got) == ARG_TREES
        got = client.make_mtree(ARG_TREES)
        assert type(got) is mod.MTree and depth_of(got) == ARG_TREES
        assert client.ok() == 41


def test_deep_values_through_the_async_clients(deep: tuple[Any, str]) -> None:
    mod, url = deep

    async def main() -> list[int]:
        async with mod.AsyncDeepClient(url) as client, AsyncRPC(url) as arpc:
            return [
                await client.node_depth(node_of(mod, ARG_NODES)),
                depth_of(await client.echo_node(node_of(mod, ARG_NODES))),
                depth_of(await client.make_mtree(ARG_TREES)),
                await arpc.mtree_depth(wire_tree(ARG_TREES, as_map=True)),
                *[depth_of(n) async for n in client.nodes(RESULT_NODES)],
            ]

    got = asyncio.run(asyncio.wait_for(main(), 30))
    assert got == [ARG_NODES, ARG_NODES, ARG_TREES, ARG_TREES, 1, RESULT_NODES]


def test_deep_stream_items(deep: tuple[Any, str]) -> None:
    mod, url = deep
    with mod.DeepClient(url) as client, RPC(url) as rpc:
        assert [depth_of(n) for n in client.nodes(RESULT_NODES)] == [1, RESULT_NODES]
        assert [depth_of(n) for n in rpc.nodes(RESULT_NODES)] == [1, RESULT_NODES]


def test_a_wrong_leaf_at_the_bottom_is_named_both_ways(deep: tuple[Any, str]) -> None:
    mod, url = deep
    depth = ARG_NODES
    # A long path keeps its first 4 and last 20 parts.
    cut = rf"(\.next){{4}}\.\.\.\({depth - 24} more\)\.\.\.(\.next){{19}}"
    path = rf"n{cut}\.v: expected int, got str"
    with mod.DeepClient(url) as client, RPC(url) as rpc:
        with pytest.raises(ParamError, match=rf"^node_depth\(\): {path}"):
            client.node_depth(node_of(mod, depth, bad=True))
        with pytest.raises(ParamError, match=rf"^node_depth\(\): {path}"):
            rpc.node_depth(chain(depth, bad=True))
        cut = rf"(\.next){{4}}\.\.\.\({RESULT_NODES - 24} more\)\.\.\.(\.next){{19}}"
        where = rf"{cut}\.v: expected int, got str"
        with pytest.raises(MPRPCError, match=rf"^(ValidationError: )?make_node\(\){where}") as e:
            client.make_node(RESULT_NODES, True)
        assert e.value.exception == "ValidationError"
        assert client.ok() == 41


def test_deep_lists_inside_any(deep: tuple[Any, str]) -> None:
    mod, url = deep
    with mod.DeepClient(url) as client, RPC(url) as rpc:
        # ARGS [ v: list<any> [ ... ]]: the list itself is level 3
        assert client.nested(nested_list(ARG_NODES)) == ARG_NODES
        assert rpc.nested(nested_list(ARG_NODES)) == ARG_NODES
        got = client.make("list", RESULT_NODES)
        depth = 1
        while got:
            depth, got = depth + 1, got[0]
        assert depth == RESULT_NODES


def test_one_level_too_deep_is_refused_cleanly(deep: tuple[Any, str]) -> None:
    mod, url = deep
    with mod.DeepClient(url) as client, RPC(url) as rpc:
        for call in (
            lambda: client.node_depth(node_of(mod, ARG_NODES + 1)),
            lambda: rpc.node_depth(chain(ARG_NODES + 1)),
            lambda: client.tree_depth(tree_of(mod, mod.Tree, ARG_TREES + 1)),
            lambda: client.make_node(RESULT_NODES + 2),
            lambda: rpc.make_node(RESULT_NODES + 2),
            lambda: client.make_tree(ARG_TREES + 2),
            lambda: client.nested(nested_list(ARG_NODES + 2)),
        ):
            with pytest.raises(MPRPCError):
                call()
        assert client.ok() == rpc.ok() == 41


def test_a_struct_that_contains_itself_is_refused_not_hung(deep: tuple[Any, str]) -> None:
    mod, url = deep
    loop = mod.Node(v=1, next=None)
    object.__setattr__(loop, "next", loop)  # frozen dataclass: only by force
    tree = mod.Tree(v=1)
    tree.kids.append(tree)
    with mod.DeepClient(url) as client:
        for call in (lambda: client.node_depth(loop), lambda: client.tree_depth(tree)):
            with pytest.raises(MPRPCError, match=r"node_depth\(\)|tree_depth\(\)|itself"):
                call()
        assert client.ok() == 41


def test_a_result_that_contains_itself_fails_that_call_only(deep: tuple[Any, str]) -> None:
    mod, url = deep
    with mod.DeepClient(url) as client, RPC(url) as rpc:
        for call in (
            lambda: client.make_node(-1),
            lambda: rpc.make_node(-1),
            lambda: client.make("loop", 0),
        ):
            with pytest.raises(MPRPCError, match=r"make_node\(\)|itself|too deep"):
                call()
        assert client.ok() == rpc.ok() == 41


def outcome_class(call: Any) -> str:
    try:
        call()
    except MPRPCError as exc:
        return f"{type(exc).__name__}/{exc.exception}"
    return "ok"


def test_too_deep_is_one_error_however_deep(deep: tuple[Any, str]) -> None:
    mod, url = deep
    with mod.DeepClient(url) as client:
        args = [outcome_class(lambda d=d: client.node_depth(node_of(mod, d))) for d in (1100, 5000)]
        results = [outcome_class(lambda d=d: client.make_node(d)) for d in (1100, 5000)]
        assert client.ok() == 41
    assert "ok" not in args + results
    assert args[0] == args[1] and results[0] == results[1], (args, results)


def test_the_message_for_a_deep_wrong_leaf_is_bounded(deep: tuple[Any, str]) -> None:
    _, url = deep
    t: Any = {"v": "bad", "kids": {}}
    for i in range(ARG_TREES - 1):
        t = {"v": i, "kids": {"k" * 200 + str(i): t}}
    with RPC(url) as rpc:
        messages = []
        for call in (
            lambda: rpc.node_depth(chain(ARG_NODES, bad=True)),
            lambda: rpc.mtree_depth(t),
        ):
            with pytest.raises(ParamError) as info:
                call()
            messages.append(str(info.value))
    assert all(m.endswith("expected int, got str") for m in messages), messages
    assert [len(m) for m in messages] == [min(len(m), 2000) for m in messages]


def test_dataclasses_module_sees_deep_results_as_plain_dataclasses(deep: tuple[Any, str]) -> None:
    mod, url = deep
    with mod.DeepClient(url) as client:
        got = client.make_node(3)
    assert dataclasses.is_dataclass(got) and got == node_of(mod, 3)


# msgpack's packer lets an empty list or map sit one level deeper than its parser reads
# (1,025 levels counting the message's own): such a message fails only its call (400 for
# a call, RemoteProtocolError for a reply); the connection goes on.


def survives(client: Any, call: Any) -> str:
    """Make `call` with `client`, then check that `client`'s connection still works."""
    try:
        call()
        got = "ok"
    except MPRPCError as exc:
        got = type(exc).__name__
    try:
        assert client.ok() == 41
    except MPRPCError as exc:
        return f"{got}, then the connection was gone: {type(exc).__name__}"
    return got


def test_an_empty_container_at_the_bottom_of_an_argument_keeps_the_connection(
    deep: tuple[Any, str],
) -> None:
    mod, url = deep
    outcomes = []
    for depth in range(1019, 1026):
        with mod.DeepClient(url) as client, RPC(url) as rpc:
            outcomes.append(survives(client, lambda d=depth: client.nested(nested_list(d))))
            outcomes.append(survives(rpc, lambda d=depth: rpc.nested(nested_list(d))))
            outcomes.append(survives(client, lambda d=depth: client.link_depth(link_of(mod, d))))
    assert not [o for o in outcomes if "gone" in o], outcomes


def test_an_empty_container_at_the_bottom_of_a_result_keeps_the_connection(
    deep: tuple[Any, str],
) -> None:
    mod, url = deep
    outcomes = []
    for depth in range(1019, 1026):
        with mod.DeepClient(url) as client, RPC(url) as rpc:
            outcomes.append(survives(client, lambda d=depth: client.make("list", d)))
            outcomes.append(survives(rpc, lambda d=depth: rpc.make("list", d)))
            outcomes.append(survives(client, lambda d=depth: client.make_link(d)))
    assert not [o for o in outcomes if "gone" in o], outcomes
