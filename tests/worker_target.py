"""Functions a test serves from an equiv.parallel.worker process."""
import time


def echo(value):
    return value


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def fail(message):
    raise ValueError(message)
