"""Chapter-CI consumer: listens on the WebSocket server and prints every product in real time."""
import asyncio
import json
import os
import sys

import websockets

WS_URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WS_URL", "ws://localhost:8765")


def show(data):
    kind = data.get("type")
    if kind == "connection_established":
        print("✅ Connected to WebSocket server!", flush=True)
    elif kind == "product_created":
        product = data["product"]
        print("🎉 Product created!")
        print(f"📦 ID: {product['id']}")
        print(f"🏷️ Name: {product['nombre']}")
        print(f"💰 Price: ${product['precio']:.2f}", flush=True)
    elif kind == "pong":
        print("🏓 pong", flush=True)
    elif kind == "status":
        print(f"📊 status: {data.get('connected_clients')} clients", flush=True)
    elif kind == "error":
        print(f"❌ error: {data.get('message')}", flush=True)


async def listen():
    while True:
        try:
            async with websockets.connect(WS_URL) as ws:
                await ws.send(json.dumps({"type": "ping"}))
                await ws.send(json.dumps({"type": "get_status"}))
                async for message in ws:
                    show(json.loads(message))
        except (OSError, websockets.ConnectionClosed) as err:
            print(f"Connection failed {err}; reconnecting in 2s", flush=True)
            await asyncio.sleep(2)


if __name__ == "__main__":
    asyncio.run(listen())
