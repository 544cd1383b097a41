# Independent reference of Prometheus's histogram chunk encodings (from the Go source),
# used to produce the byte vectors in tsdb/src/histogram/tests_chunk.rs.
import struct
def f2b(f): return struct.unpack('>Q', struct.pack('>d', f))[0]
class W:
    def __init__(s): s.bits=''
    def bit(s,b): s.bits+= '1' if b else '0'
    def wb(s,u,n):
        if n==0: return
        u &= (1<<n)-1
        s.bits += format(u,'0%db'%n)
def bitrange(x,n): return -((1<<(n-1))-1) <= x <= (1<<(n-1))
def vint(w,v):
    if v==0: w.bit(0); return
    for p,pl,sz in [(0b10,2,3),(0b110,3,6),(0b1110,4,9),(0b11110,5,12),(0b111110,6,18),(0b1111110,7,25),(0b11111110,8,56)]:
        if bitrange(v,sz): w.wb(p,pl); w.wb(v & ((1<<64)-1),sz); return
    w.wb(0xff,8); w.wb(v&((1<<64)-1),64)
def vuint(w,v):
    if v==0: w.bit(0); return
    for p,pl,sz in [(0b10,2,3),(0b110,3,6),(0b1110,4,9),(0b11110,5,12),(0b111110,6,18),(0b1111110,7,25),(0b11111110,8,56)]:
        if v < (1<<sz): w.wb(p,pl); w.wb(v,sz); return
    w.wb(0xff,8); w.wb(v,64)
def lz(x): return 64-x.bit_length()
def tz(x): return (x & -x).bit_length()-1
def xorw(w,new,cur,st):
    d=f2b(new)^f2b(cur)
    if d==0: w.bit(0); return
    w.bit(1)
    nl=min(lz(d),31); nt=tz(d)
    if st[0]!=0xff and nl>=st[0] and nt>=st[1]:
        w.bit(0); w.wb(d>>st[1], 64-st[0]-st[1]); return
    st[0],st[1]=nl,nt
    w.bit(1); w.wb(nl,5); sb=64-nl-nt; w.wb(sb,6); w.wb(d>>nt,sb)
def layout(w,schema,zt_byte,pos,neg):
    w.wb(zt_byte,8); vint(w,schema)
    for spans in (pos,neg):
        vuint(w,len(spans))
        for off,ln in spans: vuint(w,ln); vint(w,off)
def pack(hdr, w):
    b=w.bits; b += '0'*((-len(b))%8)
    return hdr+bytes(int(b[i:i+8],2) for i in range(0,len(b),8))
def int_chunk(samples, schema=0, ztb=116, pos=[(0,2)], neg=[], flags=0):
    w=W(); st=[0xff,0]; prev=None
    for i,(t,cnt,zc,s,pb,nb) in enumerate(samples):
        if i==0:
            layout(w,schema,ztb,pos,neg); vint(w,t); vuint(w,cnt); vuint(w,zc); w.wb(f2b(s),64)
            for b in pb+nb: vint(w,b)
            prev=dict(t=t,cnt=cnt,zc=zc,s=s,b=pb+nb,td=0,cd=0,zd=0,bd=[0]*len(pb+nb))
        else:
            td=t-prev['t']; cd=cnt-prev['cnt']; zd=zc-prev['zc']
            vint(w,td-prev['td']); vint(w,cd-prev['cd']); vint(w,zd-prev['zd'])
            xorw(w,s,prev['s'],st)
            bd=[]
            for j,b in enumerate(pb+nb):
                d=b-prev['b'][j]; vint(w,d-prev['bd'][j]); bd.append(d)
            prev=dict(t=t,cnt=cnt,zc=zc,s=s,b=pb+nb,td=td,cd=cd,zd=zd,bd=bd)
    return pack(bytes([0,len(samples),flags]), w)
def float_chunk(samples, schema=0, ztb=116, pos=[(0,2)], neg=[], flags=0):
    w=W(); prev=None
    for i,(t,cnt,zc,s,pb,nb) in enumerate(samples):
        vals=[cnt,zc,s]+pb+nb
        if i==0:
            layout(w,schema,ztb,pos,neg); vint(w,t)
            for v in vals: w.wb(f2b(v),64)
            prev=dict(t=t,td=0,v=vals,st=[[0xff,0] for _ in vals])
        else:
            td=t-prev['t']; vint(w,td-prev['td'])
            for j,v in enumerate(vals): xorw(w,v,prev['v'][j],prev['st'][j])
            prev=dict(t=t,td=td,v=vals,st=prev['st'])
    return pack(bytes([0,len(samples),flags]), w)
ints=[(1000,5,1,18.4,[1,2],[]),(2000,8,2,30.0,[2,2],[]),(3000,12,2,45.5,[3,3],[])]
print('INT', list(int_chunk(ints)))
fl=[(1000,5.0,1.0,18.4,[1.0,3.0],[]),(2000,8.0,2.0,30.0,[2.0,4.0],[]),(3000,12.0,2.0,45.5,[3.0,6.0],[])]
print('FLOAT', list(float_chunk(fl)))
# negative buckets, schema 3, threshold 0, big timestamp, negative sums
ints2=[(1700000000000,3,0,-2.5,[1],[2]),(1700000015000,5,0,-7.0,[2],[2]),(1700000030000,9,1,-1.0,[3],[3])]
print('INT2', list(int_chunk(ints2, schema=3, ztb=0, pos=[(-2,1)], neg=[(5,1)])))
