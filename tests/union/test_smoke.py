async def test_healthz(client, settings):
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "jobs": "embedded"}


async def test_staff_login_lands_on_role_home(web, make_user):
    await make_user("col1", ["collector"], "BLR")
    r = await web.login("col1", "correct horse battery")
    assert r.status_code == 303
    assert r.headers["location"] == "/home/collector"
    r = await web.get("/home/collector")
    assert r.status_code == 200
    assert "Find a member" in r.text
