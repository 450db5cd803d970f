"""What HM9000's Cloud Controllers expect of the policy, as parameters of the one policy.

HM9000 restarted the first three crashes of a slot at once, then waited 30 s doubling up
to 960 s, never gave up, and forgot a slot's count after 1920 s without a crash
(HM9000.md §5.3); through HM 2.0's keys that is the table below. An operator's own
`intervals` values win over it.
"""

from health_manager.policy_parameters import PolicyParameters

START_SUBJECT = "hm9000.start"
STOP_SUBJECT = "hm9000.stop"

INTERVAL_DEFAULTS = {
    "flapping_death": 3,
    "min_restart_delay": 30,
    "max_restart_delay": 960,
    "delay_time_noise": 0,
    "giveup_crash_number": -1,
    "flapping_timeout": 1920,
}

POLICY = PolicyParameters(
    # HM9000.md §5.3 (`0c0c0d3`): a broken app is not restarted on every index at once.
    restart_only_index_zero_while_app_down=True,
    # DEAs of this era announce evacuation with EVACUATING heartbeats (§5.6).
    replace_evacuating_instances=True,
    # Its CC refuses a start unless the package is STAGED (§1.4).
    start_only_staged_apps=True,
)
