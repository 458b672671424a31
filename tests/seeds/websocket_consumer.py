"""Desks consumer: prints every desk notification the WebSocket server broadcasts."""
import asyncio
import json
import os
import sys
from datetime import datetime

import websockets

WS_URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WS_URL", "ws://localhost:8765")


def now():
    return datetime.now().strftime("%H:%M:%S")


def show(data):
    kind = data.get("type")
    if kind == "connection_established":
        print("🎯 Consumidor de Notificaciones de Mesas")
        print("✅ Conectado al servidor WebSocket", flush=True)
    elif kind == "desk_created":
        desk = data["desk"]
        print(f"[{now()}] 🪑 Nueva mesa creada: {desk['name']} ({desk['width']}x{desk['height']}cm)")
        print(f"   🆔 ID: {desk['id']}", flush=True)
    elif kind == "desk_updated":
        desk = data["desk"]
        print(f"[{now()}] ✏️ Mesa actualizada: {desk['name']} ({desk['width']}x{desk['height']}cm)")
        print(f"   🆔 ID: {desk['id']}", flush=True)
    elif kind == "desk_deleted":
        print(f"[{now()}] 🗑️ Mesa eliminada: {data['desk_name']}")
        print(f"   🆔 ID: {data['desk_id']}", flush=True)


async def main():
    while True:
        try:
            async with websockets.connect(WS_URL) as ws:
                async for message in ws:
                    show(json.loads(message))
        except (OSError, websockets.ConnectionClosed):
            print("❌ No se pudo conectar al servidor WebSocket; reintentando", flush=True)
            await asyncio.sleep(2)


if __name__ == "__main__":
    asyncio.run(main())
