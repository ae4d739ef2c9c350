"""The Interference page's Twin maps view (issue 21 part 2): original and unlearned (and the oracle)
on one projection, forget / retain / unseen images, a linked selection, the measured retain damage."""


def test_the_twin_maps_view_draws_one_projection_per_model_and_the_retain_damage(street_run,
                                                                                 interference_page):
    app = interference_page("Twin maps")
    (maps,) = app.get("plotly_chart")
    spec = maps.proto.spec
    assert spec.count('"type":"scatter"') >= 2 * 3  # two panels (original, grad_ascent) x three groups
    for group in ("forget", "retain", "unseen"):
        assert f'"name":"{group}"' in spec
    distances, damage = app.dataframe[-2].value, app.dataframe[-1].value
    assert set(distances["group"]) == {"forget", "retain", "unseen"}
    assert "worst change" in damage.columns and len(damage) > 0
    # a selection typed as ids rings the images in every panel (the linked selection)
    app.text_input(key="twin_selected_ids").set_value("1, 2").run()
    assert not app.exception
    assert app.get("plotly_chart")[0].proto.spec.count('"name":"selected"') == 2
