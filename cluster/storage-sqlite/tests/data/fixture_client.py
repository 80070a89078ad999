import transaction, ZODB
from persistent.mapping import PersistentMapping
from neo.client.Storage import Storage
st = Storage(master_nodes='127.0.0.1:25010', name='fixture')
db = ZODB.DB(st)
c = db.open()
root = c.root()
root['a'] = PersistentMapping(x=1)
transaction.get().note(u'first')
transaction.get().setUser(u'alice')
transaction.commit()
root['a']['x'] = 2
root['b'] = PersistentMapping(y='z' * 2000)  # compressible: stored zlib-compressed
transaction.get().note(u'second')
transaction.commit()
root['a']['x'] = 3
transaction.get().note(u'third')
transaction.commit()
# Undo the third transaction: obj rows with value_tid pointing at the second.
t3 = db.undoLog(0, 1)[0]
db.undo(t3['id'])
transaction.get().note(u'undo third')
transaction.commit()
for h in db.undoLog(0, 10):
    print(h['id'].hex(), h['description'])
print('root oid', root._p_oid.hex(), 'a', root['a']._p_oid.hex(), 'b', root['b']._p_oid.hex())
print('last tid', st.lastTransaction().hex())
c.close(); db.close()
