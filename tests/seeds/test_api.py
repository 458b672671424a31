"""Chapter-CI API tester: `auto N` creates N products through POST /api/product/."""
import os
import sys

import requests

API_URL = os.environ.get("API_URL", "http://localhost:8000")


def create(n):
    product = {"nombre": f"Producto {n}", "precio": 10.5 + n, "talla": "M"}
    response = requests.post(f"{API_URL}/api/product/", json=product, timeout=10)
    print(response.status_code, response.text, flush=True)
    return response


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "auto":
        count = int(sys.argv[2]) if len(sys.argv) > 2 else 5
        for n in range(1, count + 1):
            create(n)
        listed = requests.get(f"{API_URL}/api/products/", timeout=10)
        print(f"listed {len(listed.json())} products", flush=True)
    else:
        print("usage: test_api.py auto [N]")
