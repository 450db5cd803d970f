"""Trial reporter plugin: `trial --reporter=slowest` (used by `make test`)."""

from twisted.plugins.twisted_trial import _Reporter

slowest = _Reporter(
    "Slowest tests reporter",
    "health_manager.testing.slowest",
    description="the tree reporter, then the 10 slowest tests before the summary",
    longOpt="slowest",
    shortOpt=None,
    klass="SlowestTestsReporter",
)
