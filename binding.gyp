{
  "targets": [
    {
      "target_name": "lifeboat_native",
      "sources": ["native/seek.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
