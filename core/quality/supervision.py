"""Supervision and quality, assembled: the journal, retention, the SMS outbox, the survey, spot checks, follow-ups.

``build`` wires the parts to a TicketService from the settings; ``cleanup_ctx``
starts their background tasks after the store is ready and stops them in
reverse; ``add_routes`` puts their HTTP API on the application. Without
Twilio settings the outbox keeps messages pending (nothing is lost) and the
webhook is not mounted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from core.calls.tickets import TicketService
from core.config import Settings
from core.dispatch.planner import DispatchPlanner
from core.quality.complaints import Complaints
from core.quality.config import QualitySettings
from core.quality.conversation import Conversations
from core.quality.journal import Journaler, read_key
from core.quality.journal_status import JournalWatch
from core.quality.outbox import Outbox
from core.quality.reporter_links import ReporterLinks
from core.quality.retention import RetentionSchedule
from core.quality.spot_checks import SpotChecks
from core.quality.status_views import add_status_routes
from core.quality.survey import Survey
from core.quality.twilio_sms import TwilioMessenger

log = logging.getLogger(__name__)


@dataclass
class Supervision:
    journaler: Journaler
    outbox: Outbox
    messenger: TwilioMessenger | None
    complaints: Complaints
    spot_checks: SpotChecks
    survey: Survey | None
    _removers: list[Any]
    retention: RetentionSchedule | None = None
    journal_watch: JournalWatch | None = None
    recordings_dir: str | None = None  # recordings are played only from inside it
    reporter_links: ReporterLinks | None = None
    conversations: Conversations | None = None  # the desk's questions and texts to a silent caller

    async def cleanup_ctx(self, _app: Any) -> AsyncIterator[None]:
        await self.journaler.start()
        await self.outbox.start()
        await self.complaints.start()
        if self.survey is not None:
            await self.survey.start()
        if self.retention is not None:
            await self.retention.start()
        yield
        if self.reporter_links is not None:
            await self.reporter_links.stop()
        if self.retention is not None:
            await self.retention.stop()  # before the journaler: an expiry run appends to its chain
        for remove in self._removers:
            remove()
        if self.survey is not None:
            await self.survey.stop()
        await self.complaints.stop()
        await self.outbox.stop()
        await self.journaler.stop()
        if self.messenger is not None:
            self.messenger.close()

    def metrics(self) -> Any:
        """The journal, the SMS outbox and retention in /metrics: a prometheus-client collector."""
        return _Collector(self)

    def families(self) -> Iterator[Metric]:
        yield CounterMetricFamily("jiejing_journal_entries_appended_total",
                                  "Step and recording entries this process appended to the journal's chain.",
                                  value=self.journaler.appended)
        yield CounterMetricFamily("jiejing_journal_anchors_total", "Anchors this process signed.",
                                  value=self.journaler.anchored)
        outbox = CounterMetricFamily("jiejing_outbox_attempts_total",
                                     "SMS send attempts by outcome (sent, failed for good, pending a retry, unknown "
                                     "until the provider's list settles it).", labels=["outcome"])
        for outcome in ("sent", "failed", "pending", "unknown"):
            outbox.add_metric([outcome], self.outbox.settled.get(outcome, 0))
        yield outbox
        if self.retention is not None:
            yield CounterMetricFamily("jiejing_retention_runs_total", "Retention runs since the start.",
                                      value=self.retention.runs)
            expired = CounterMetricFamily("jiejing_retention_expired_total",
                                          "Tickets and recordings retention expired since the start.",
                                          labels=["what"])
            for what, n in self.retention.expired.items():
                expired.add_metric([what], n)
            yield expired
            if self.retention.last_run is not None:
                yield GaugeMetricFamily("jiejing_retention_last_run_timestamp_seconds",
                                        "When retention last ran (Unix time).", value=self.retention.last_run)

    def add_routes(self, app: Any) -> None:
        from core.quality import views as web_quality

        web_quality.add_routes(app, spot_checks=self.spot_checks, survey=self.survey, complaints=self.complaints,
                               journal=self.journal_watch, recordings_dir=self.recordings_dir)
        if self.reporter_links is not None:
            add_status_routes(app, self.reporter_links)
        if self.conversations is not None:
            from core.quality import conversation_views

            conversation_views.add_routes(app, self.conversations)


class _Collector:
    name = "supervision"  # in jiejing_metrics_collector_errors_total

    def __init__(self, supervision: Supervision) -> None:
        self._supervision = supervision

    def collect(self) -> Iterator[Metric]:
        return self._supervision.families()


def build(service: TicketService, settings: Settings, quality: QualitySettings, *,
          planner: DispatchPlanner | None = None) -> Supervision:
    """The parts, wired; with ``planner`` (its officers and travel model) and a ``public_url``, the reporters'
    status links too."""
    engine = service.engine
    anchor_key = read_key(quality.journal_key_file) if quality.journal_key_file else None
    anchor_file = quality.journal_anchor_file or None
    if (anchor_key is None) != (anchor_file is None):
        log.warning("journal anchors need both JIEJING_JOURNAL_KEY_FILE and JIEJING_JOURNAL_ANCHOR_FILE; none written")
        anchor_key, anchor_file = None, None
    journaler = Journaler(engine, anchor_key=anchor_key, anchor_file=anchor_file,
                          anchor_interval_s=quality.journal_anchor_interval_s)
    messenger = None
    if quality.twilio_account_sid and quality.twilio_auth_token and quality.twilio_from:
        messenger = TwilioMessenger(quality.twilio_account_sid, quality.twilio_auth_token, quality.twilio_from,
                                    base_url=quality.twilio_base_url)
    outbox = Outbox(engine, messenger)
    complaints = Complaints(engine, deadline_hours=quality.follow_up_hours, outbox=outbox)
    spot_checks = SpotChecks(engine, tz=settings.timezone, shift_starts=quality.shift_starts,
                             default_size=quality.spot_check_size)
    removers = [journaler.attach(service)]
    survey = None
    # Twilio's SMS webhook is also how text reports come in: it is there whenever Twilio can sign
    # requests to it; surveys are enqueued (the listener and the catch-up task) only when enabled.
    if quality.survey_enabled or (quality.twilio_auth_token and quality.twilio_webhook_url):
        survey = Survey(engine, outbox, complaints, auth_token=quality.twilio_auth_token,
                        webhook_url=quality.twilio_webhook_url, tz=settings.timezone, sends=quality.survey_enabled)
        removers.append(survey.attach(service))
    retention = RetentionSchedule(engine, journaler, days=quality.retention_days,
                                  recordings_dir=settings.recordings_dir or None,
                                  attachments_dir=quality.attachments_dir or None)
    journal_watch = JournalWatch(engine, anchor_file=anchor_file, anchor_key=anchor_key, retention=retention)
    reporter_links = None
    if planner is not None and quality.public_url:
        reporter_links = ReporterLinks(engine, service, outbox, public_url=quality.public_url,
                                       travel=planner.settings)
        reporter_links.attach(service, planner.officers)
    conversations = Conversations(service, outbox, window_s=settings.silent_sms_window_s)
    return Supervision(journaler, outbox, messenger, complaints, spot_checks, survey, removers,
                       retention=retention, journal_watch=journal_watch,
                       recordings_dir=settings.recordings_dir or None, reporter_links=reporter_links,
                       conversations=conversations)
