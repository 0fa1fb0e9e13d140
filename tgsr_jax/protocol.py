"""The 12-experiment CDMER protocol of the TGSR paper (Tables II and III)."""
from __future__ import annotations

import dataclasses

from tgsr_jax import cdmer_io

# TYPE-I: between the SMIC sensors; TYPE-II: between CASME II and SMIC. Paper order (Exp. 1-12).
TYPE_I = ("H->V", "V->H", "H->N", "N->H", "V->N", "N->V")
TYPE_II = ("C->H", "H->C", "C->V", "V->C", "C->N", "N->C")
ALL_EXPERIMENTS = TYPE_I + TYPE_II


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One source -> target transfer, e.g. ``V->N``."""
  source: str  # database name, e.g. SMIC_VIS
  target: str

  @property
  def name(self) -> str:
    return f"{cdmer_io.DATABASE_CODES[self.source]}->{cdmer_io.DATABASE_CODES[self.target]}"

  @property
  def folder(self) -> str:
    return f"{self.source}_to_{self.target}"

  @property
  def kind(self) -> str:
    return "TYPE-I" if self.name in TYPE_I else "TYPE-II" if self.name in TYPE_II else "other"


def parse_experiments(spec: str) -> list[Experiment]:
  """Parses ``'V->N,N->V'`` (codes H, V, N, C or full names) into experiments.

  Raises:
    ValueError: naming the entry that is not ``SRC->TGT`` of known databases, or that repeats
      an earlier one.
  """
  experiments = []
  for entry in (e.strip() for e in spec.split(",")):
    if not entry:
      continue
    parts = [p.strip() for p in entry.split("->")]
    if len(parts) != 2:
      raise ValueError(f"config.experiments: {entry!r} is not of the form SRC->TGT (e.g. 'V->N')")
    names = []
    for part in parts:
      name = cdmer_io.CODE_DATABASES.get(part.upper(), part.upper())
      if name not in cdmer_io.DATABASE_CODES:
        raise ValueError(f"config.experiments: unknown database {part!r} in {entry!r}; use one of "
                         f"{sorted(cdmer_io.CODE_DATABASES)} or {sorted(cdmer_io.DATABASE_CODES)}")
      names.append(name)
    if names[0] == names[1]:
      raise ValueError(f"config.experiments: {entry!r} has the same source and target")
    experiment = Experiment(source=names[0], target=names[1])
    if experiment in experiments:
      raise ValueError(f"config.experiments: {entry!r} is listed twice (as {experiment.name}); "
                       "each experiment may appear once (it would count twice in the averages)")
    experiments.append(experiment)
  if not experiments:
    raise ValueError("config.experiments: no experiment given")
  return experiments
