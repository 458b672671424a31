"""Pets flow from the README: token → create a pet → its enriched data → Redis stats."""
import os
import sys
import time

import requests

API_URL = os.environ.get("API_URL", "http://localhost:8000")
USERNAME = os.environ.get("PETS_USERNAME", "admin")
PASSWORD = os.environ.get("PETS_PASSWORD", "admin123")


def main():
    tokens = requests.post(f"{API_URL}/api/token/", json={"username": USERNAME, "password": PASSWORD}, timeout=10)
    tokens.raise_for_status()
    access = tokens.json()["access"]
    print("token ok", flush=True)
    refreshed = requests.post(f"{API_URL}/api/token/refresh/", json={"refresh": tokens.json()["refresh"]}, timeout=10)
    refreshed.raise_for_status()
    access = refreshed.json()["access"]
    print("refresh ok", flush=True)
    headers = {"Authorization": f"Bearer {access}"}

    pet = {"name": "Luna", "species": "Cat", "age": 3, "owner": "María García", "vaccinated": True}
    created = requests.post(f"{API_URL}/api/pets/", json=pet, headers=headers, timeout=10)
    created.raise_for_status()
    body = created.json()
    print(f"{body['message']} id={body['pet']['id']} task_queued={body['task_queued']}", flush=True)
    pet_id = body["pet"]["id"]

    cats = requests.get(f"{API_URL}/api/pets/?species=Cat&vaccinated=true", headers=headers, timeout=10).json()
    print(f"filtered {len(cats)} vaccinated cats, includes new pet: {any(p['id'] == pet_id for p in cats)}", flush=True)

    deadline = time.time() + 60
    while time.time() < deadline:
        current = requests.get(f"{API_URL}/api/pets/{pet_id}/", headers=headers, timeout=10).json()
        if current.get("enrichment"):
            print(f"enriched: {sorted(current['enrichment'].keys())}", flush=True)
            break
        time.sleep(0.5)
    else:
        print("enrichment never arrived", flush=True)
        sys.exit(1)

    stats = requests.get(f"{API_URL}/api/redis/stats/", headers=headers, timeout=10)
    stats.raise_for_status()
    s = stats.json()
    print(f"stats queue_name={s['queue_name']} pending_tasks={s['pending_tasks']} connected_clients={s['connected_clients']}", flush=True)


if __name__ == "__main__":
    main()
