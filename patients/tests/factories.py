import factory

from patients.models import Patient


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    name = factory.Sequence(lambda n: f"patient-{n:03d}")
    uuid = factory.Faker("uuid4", cast_to=None)
