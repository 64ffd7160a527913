"""The one declaration of the pipeline: its services, the stages each runs, the topics each stage
reads and writes, and each service's default metrics port.

Everything else reads this: the runtime (a stage may only produce to the topics declared here,
and a service must run exactly its declared stages), the CLI and the local runner (which
services exist, in flow order, on which ports), and the tests that check docker-compose,
Prometheus and the README against it. Adding a stage starts here (docs/operations.md lists the
other edits).

Every stage may also write to the dead-letter topic: that is the runtime's, not declared per stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.topics import ALERTS, ARTICLES, LABELLED, LINKED, RAW_PAGES, STORIES, TAGGED, TopicSpec


@dataclass(frozen=True)
class StageDecl:
    """One unit of work: reads ``input`` (None: a source stage that produces on its own, like
    fetch's poller), writes only to ``outputs``. Its name labels its metrics and logs."""

    name: str
    input: TopicSpec | None
    outputs: tuple[TopicSpec, ...]

    @property
    def input_label(self) -> str:
        """The ``topic`` label of the stage's input in its metrics (a source stage: ``SOURCE_INPUT``)."""
        return self.input.suffix if self.input is not None else SOURCE_INPUT


@dataclass(frozen=True)
class ServiceDecl:
    """One process (one container): a consumer group, a metrics port, one or more stages."""

    name: str
    metrics_port: int
    stages: tuple[StageDecl, ...]

    def group_id(self, prefix: str) -> str:
        """The Kafka consumer group of the service (faust's app id)."""
        return f"{prefix}-{self.name}"

    @property
    def inputs(self) -> tuple[TopicSpec, ...]:
        return tuple(s.input for s in self.stages if s.input is not None)


FETCH = StageDecl("fetch", None, (RAW_PAGES,))
CLEAN = StageDecl("clean", RAW_PAGES, (ARTICLES,))
LANGDETECT = StageDecl("langdetect", ARTICLES, (LABELLED,))
ENTITIES = StageDecl("entities", LABELLED, (TAGGED,))
# Story linking runs in the alert service, ahead of the rules (docs/choices.md: a sixth process
# would cost its idle consumer and a group of its own for the same hop).
STORY_LINKING = StageDecl("stories", TAGGED, (LINKED, STORIES))
ALERT = StageDecl("alert", LINKED, (ALERTS,))
WEBHOOKS = StageDecl("alert-webhooks", ALERTS, ())

# In flow order: the local runner starts them in this order and drains them in this order.
SERVICES: tuple[ServiceDecl, ...] = (
    ServiceDecl("fetch", 9301, (FETCH,)),
    ServiceDecl("clean", 9302, (CLEAN,)),
    ServiceDecl("langdetect", 9303, (LANGDETECT,)),
    ServiceDecl("entities", 9304, (ENTITIES,)),
    ServiceDecl("alert", 9305, (STORY_LINKING, ALERT, WEBHOOKS)),
)

SERVICE_NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)

# The ``topic`` label of what a source stage takes in (its metrics): the items its sources list.
SOURCE_INPUT = "sources"

# What a transient failure is blamed on (``newswatch_dependency_errors_total{dependency}``): the
# broker, Redis, or anything else that passes by itself (the network, a delivery another consumer holds).
DEPENDENCIES: tuple[str, ...] = ("broker", "redis", "other")


def service(name: str) -> ServiceDecl:
    for decl in SERVICES:
        if decl.name == name:
            return decl
    raise KeyError(f"unknown service {name!r}; one of {', '.join(SERVICE_NAMES)}")


def stage_names() -> tuple[str, ...]:
    return tuple(stage.name for svc in SERVICES for stage in svc.stages)


def check() -> None:
    """The declaration is consistent: unique names and ports, every topic read is written by a
    stage before it (no stage reads a topic nobody produces)."""
    names = stage_names()
    if len(set(names)) != len(names):
        raise ValueError(f"stage names repeat: {names}")
    ports = [s.metrics_port for s in SERVICES]
    if len(set(ports)) != len(ports):
        raise ValueError(f"metrics ports repeat: {ports}")
    produced: set[str] = set()
    for svc in SERVICES:
        for stage in svc.stages:
            if stage.input is not None and stage.input.suffix not in produced \
                    and stage.input.suffix not in {o.suffix for o in stage.outputs}:
                # a stage may read what an earlier stage of the same service writes (alert → webhooks)
                earlier = {o.suffix for s in svc.stages for o in s.outputs}
                if stage.input.suffix not in earlier:
                    raise ValueError(f"stage {stage.name} reads {stage.input.suffix}, which no stage writes")
            produced.update(o.suffix for o in stage.outputs)


check()
