"""A real server in its own process (its pongs do not wait for the test's GIL): prints
its URL."""

import asyncio

from pymprpc.server import Server
from pymprpc.testing import server_url


async def main():
    server = Server(("127.0.0.1", 0))

    @server.register_function()
    async def gen(n: int):
        for i in range(n):
            yield [i, "q" * 100]
            if i % 50 == 0:
                await asyncio.sleep(0)

    @server.register_function(executor="inline")
    def add(a: int, b: int) -> int:
        return a + b

    await server.start()
    print(server_url(server), flush=True)
    await server.serve_forever()


asyncio.run(main())
