"""Rxul Chat room client: joins /ws/chats/{chat_id} with the access token and prints messages."""
import asyncio
import json
import os
import sys

import websockets

WS_URL = os.environ.get("WS_URL", "ws://localhost:8000")


async def main(chat_id, token):
    url = f"{WS_URL}/ws/chats/{chat_id}?token={token}"
    try:
        async with websockets.connect(url) as ws:
            async for raw in ws:
                data = json.loads(raw)
                if data.get("type") == "connection_established":
                    print(f"joined chat {data.get('chat_id')}", flush=True)
                elif data.get("type") == "message":
                    text = data.get("text") or data.get("content")
                    print(f"💬 {data.get('chat_id')}: {text}", flush=True)
    except websockets.InvalidStatus as err:
        print(f"refused {err.response.status_code}", flush=True)
    except websockets.ConnectionClosed as err:
        print(f"closed {err.rcvd.code if err.rcvd else None}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
