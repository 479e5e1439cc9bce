"""Keeping freed memory in the heaps (rec_jax.hostmem): the amount from the
environment, bad values refused, glibc taking the settings. What it is for
(no page faults per step, 1.2-1.3x on the Beauty step) is measured by
benchmarks/hostmem.py: in small processes glibc's placement of XLA's
blocks over its thread arenas varies from run to run, too much for a
test's threshold."""

import pytest

from rec_jax import hostmem

GLIBC = hostmem._glibc() is not None  # pylint: disable=protected-access


def test_amount_from_the_environment(monkeypatch):
  monkeypatch.delenv(hostmem.ENV, raising=False)
  assert hostmem.keep_mb() == hostmem.DEFAULT_KEEP_MB
  monkeypatch.setenv(hostmem.ENV, '0')
  assert hostmem.keep_mb() == 0
  monkeypatch.setenv(hostmem.ENV, ' 64 ')
  assert hostmem.keep_mb() == 64


@pytest.mark.parametrize('raw', ['-1', 'lots', '1.5', '4096'])
def test_bad_amount_is_refused_naming_the_variable(monkeypatch, raw):
  monkeypatch.setenv(hostmem.ENV, raw)
  with pytest.raises(ValueError, match=hostmem.ENV):
    hostmem.keep_mb()


@pytest.mark.parametrize('mb', [0, 4096])
def test_setting_out_of_range_is_refused(mb):
  with pytest.raises(ValueError, match='expected 1 to'):
    hostmem.set_keep(mb)


def test_import_sets_it_once():
  # conftest imported rec_jax already: the setting is in force, and asking
  # again changes nothing.
  first = hostmem.keep_freed_memory()
  assert first == (hostmem.keep_mb() if GLIBC else 0)
  assert hostmem.keep_freed_memory() == first


@pytest.mark.skipif(not GLIBC, reason='a glibc malloc setting')
def test_glibc_takes_the_settings():
  assert hostmem.set_keep(hostmem.keep_mb() or hostmem.DEFAULT_KEEP_MB)
  assert hostmem.set_keep(1)
  assert hostmem.set_keep(hostmem.DEFAULT_KEEP_MB)
