"""Every syscall the engine makes goes through one object with the interface of
runtime.sys.linux.Linux; runtime.sys.fake.FakeSys records the same calls for unit tests.
Constants live in runtime.sys.consts."""
