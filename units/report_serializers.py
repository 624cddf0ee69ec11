"""The alarm-burden report's query parameters and body (units/report.py says what each is)."""

from rest_framework import serializers

from vitals.serializers import ReadingFilterSerializer


class AlarmReportFilterSerializer(ReadingFilterSerializer):
    """?since=&until= (ISO 8601): the window [since, until); until defaults to now (and is
    clipped to it), since to 7 days before until."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["since"].help_text = "Start of the window, included (default: until - 7 d)."
        self.fields["until"].help_text = "End of the window, excluded (default and at most: now)."


class _Unit(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()


class _Totals(serializers.Serializer):
    total = serializers.IntegerField()
    technical = serializers.IntegerField()
    physiological = serializers.IntegerField()
    per_bed_day = serializers.FloatField(allow_null=True, help_text="Null: no bed-days.")


class _ByKind(serializers.Serializer):
    kind = serializers.CharField()
    category = serializers.ChoiceField(choices=["physiological", "technical"])
    alarms = serializers.IntegerField()
    per_bed_day = serializers.FloatField(allow_null=True)
    acknowledged = serializers.IntegerField()
    self_resolved = serializers.IntegerField(
        help_text="Resolved by themselves within 30 s, never acknowledged."
    )
    nuisance_share = serializers.FloatField(help_text="self_resolved / alarms.")


class _ByPriority(serializers.Serializer):
    category = serializers.ChoiceField(choices=["physiological", "technical"])
    priority = serializers.CharField()
    alarms = serializers.IntegerField()
    per_bed_day = serializers.FloatField(allow_null=True)


class _Acknowledge(serializers.Serializer):
    priority = serializers.CharField(help_text="The priority acknowledged.")
    count = serializers.IntegerField()
    median_seconds = serializers.FloatField(help_text="Nearest rank.")
    p90_seconds = serializers.FloatField(help_text="Nearest rank.")


class _Histogram(serializers.Serializer):
    bins = serializers.ListField(
        child=serializers.IntegerField(), help_text="Lower bounds, seconds; the last is open."
    )
    counts = serializers.DictField(
        child=serializers.ListField(child=serializers.IntegerField()),
        help_text="By priority: acknowledged alarms per bin.",
    )


class _Bed(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField()
    position = serializers.IntegerField()
    bed_days = serializers.FloatField()
    alarms = serializers.IntegerField()
    alarms_per_bed_day = serializers.FloatField(allow_null=True)
    seconds_in_alarm = serializers.FloatField(
        help_text="Sum of its alarms' open intervals, each clipped to the window."
    )


class AlarmReportSerializer(serializers.Serializer):
    unit = _Unit()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    bed_days = serializers.FloatField()
    alarms = _Totals()
    by_kind = _ByKind(many=True, help_text="Noisiest first.")
    by_priority = _ByPriority(many=True)
    acknowledge = _Acknowledge(many=True)
    acknowledge_histogram = _Histogram()
    beds = _Bed(many=True, help_text="Every bed of the unit, noisiest first.")
