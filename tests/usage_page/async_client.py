# The async client example of the usage page (seed/index.rst), as written; only the imports
# and the coroutine around it (which the page leaves implicit, with its `loop`) are added.
import asyncio

from pymprpc.client import AsyncRPC


async def main():
    loop = asyncio.get_running_loop()
    async with AsyncRPC(
            addr="tcp://admin:admin@127.0.0.1:5000",
            loop=loop,
            debug=True,
            heart_beat=40) as rpc:
        print(await rpc.system.listMethods())
        print(await rpc.system.methodSignature("testclassmethod"))
        print(await rpc.system.methodHelp("testfunc"))
        print(await rpc.system.lenConnections())
        print(await rpc.system.lenUndoneTasks())
        print(await rpc.testclassmethod(1, 2))
        print(await rpc.testclasscoro(2, 3))
        print(await rpc.testcoro(5, 6))
        print(await rpc.testfunc(5, 4))
        agen = await rpc.testcorogen(1, 2)
        async for i in agen:
            print(i)


asyncio.run(main())
